// Module paths of the server's trees written as the Python that reaches them in a `%%ndif` cell.

/**
 * `model.model.layers[3].mlp` for the dotted path `model.layers.3.mlp`: numeric parts become indices, and the
 * root is the cell's `model`. An empty path is the model itself.
 */
export function pythonPath(dotted: string): string {
  let text = 'model';
  for (const part of dotted ? dotted.split('.') : []) {
    text += /^\d+$/.test(part) ? `[${part}]` : `.${part}`;
  }
  return text;
}

/** The expression inserted for a clicked module: its output, the value a cell usually reads. */
export function outputExpression(dotted: string): string {
  return `${pythonPath(dotted)}.output`;
}

/** A parameter count as people say it: 135M, 4.2K, 7B. */
export function shortCount(count: number): string {
  const units: [number, string][] = [
    [1e9, 'B'],
    [1e6, 'M'],
    [1e3, 'K']
  ];
  for (const [size, unit] of units) {
    if (count >= size) {
      const value = count / size;
      return `${value >= 100 ? value.toFixed(0) : value.toPrecision(2).replace(/\.0$/, '')}${unit}`;
    }
  }
  return String(count);
}

/** How long ago or how long, in seconds, as `0.3 s`, `12 s`, `3 min`. */
export function shortDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
    return '';
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)} s`;
  }
  if (seconds < 120) {
    return `${Math.round(seconds)} s`;
  }
  return `${Math.round(seconds / 60)} min`;
}
