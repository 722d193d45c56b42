// The cells of a new NDIF notebook, and the notebook that holds them.

export const SAMPLE_CELLS = [
  '%load_ext ndif_jupyter\nfrom ndif_jupyter import Model\n\nmodel = Model()',
  '%%ndif generate --max-new-tokens 3 --prompt "The Eiffel Tower is in the city of"\n' +
    'hidden = [layer.output.save() for layer in model.model.layers]'
];

/** A new NDIF notebook as nbformat 4.5 JSON: the sample cells for a Python 3 kernel. */
export function sampleNotebook(): Record<string, unknown> {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {
      kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' },
      language_info: { name: 'python' }
    },
    cells: SAMPLE_CELLS.map((source, index) => ({
      cell_type: 'code',
      id: `ndif-sample-${index}`,
      metadata: {},
      source,
      outputs: [],
      execution_count: null
    }))
  };
}
