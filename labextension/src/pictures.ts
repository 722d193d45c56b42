// An activation browser whose widget cannot come back (its notebook reopened after the kernel stopped) shows the
// picture saved with it, instead of "Error displaying widget: model not found".

import { NotebookPanel } from '@jupyterlab/notebook';

export const WIDGET_MIME = 'application/vnd.jupyter.widget-view+json';
/** The output metadata key the kernel sets on a browser's output that carries its picture. */
export const PICTURE_MARK = 'ndif-jupyter';

/** The parts of an output this module reads and writes (JupyterLab's IOutputModel and IOutputAreaModel). */
export interface IOutputLike {
  readonly data: Readonly<Record<string, unknown>>;
  readonly metadata: Readonly<Record<string, unknown>>;
  toJSON(): { output_type: string; data?: Record<string, unknown>; metadata?: Record<string, unknown> };
}

export interface IOutputsLike {
  readonly length: number;
  get(index: number): IOutputLike;
  set(index: number, value: ReturnType<IOutputLike['toJSON']>): void;
}

/** The widget model a browser's output shows, when the output is marked as carrying a picture; else null. */
export function pictureWidgetId(output: IOutputLike): string | null {
  const view = output.data[WIDGET_MIME] as { model_id?: unknown } | undefined;
  if (!view || typeof view.model_id !== 'string' || !output.metadata[PICTURE_MARK] || !output.data['image/png']) {
    return null;
  }
  return view.model_id;
}

/** Drops the widget from each marked output whose model is not in `alive`, so that its picture shows; returns how
 * many outputs changed. */
export function showPictures(outputs: IOutputsLike, alive: ReadonlySet<string>): number {
  let changed = 0;
  for (let index = 0; index < outputs.length; index += 1) {
    const output = outputs.get(index);
    const id = pictureWidgetId(output);
    if (id === null || alive.has(id)) {
      continue;
    }
    const json = output.toJSON();
    const data = { ...(json.data ?? {}) };
    delete data[WIDGET_MIME];
    outputs.set(index, { ...json, data });
    changed += 1;
  }
  return changed;
}

/** The widget models that can still be shown: the kernel's (asked for its widget comms) and those whose state the
 * notebook saved. */
async function aliveWidgets(panel: NotebookPanel): Promise<Set<string>> {
  const alive = new Set<string>();
  const saved = panel.model?.getMetadata('widgets') as
    { 'application/vnd.jupyter.widget-state+json'?: { state?: Record<string, unknown> } } | undefined;
  for (const id of Object.keys(saved?.['application/vnd.jupyter.widget-state+json']?.state ?? {})) {
    alive.add(id);
  }
  const kernel = panel.sessionContext.session?.kernel;
  if (kernel) {
    const reply = await kernel.requestCommInfo({ target_name: 'jupyter.widget' });
    if (reply.content.status === 'ok') {
      for (const id of Object.keys(reply.content.comms)) {
        alive.add(id);
      }
    }
  }
  return alive;
}

/** Once the notebook and its kernel are ready, shows the picture of every browser whose widget is gone; the
 * notebook stays as clean or dirty as it was. */
export async function showPicturesOfGoneWidgets(panel: NotebookPanel): Promise<void> {
  await panel.context.ready;
  await panel.sessionContext.ready;
  const model = panel.model;
  if (!model) {
    return;
  }
  const alive = await aliveWidgets(panel).catch(() => new Set<string>());
  const wasDirty = model.dirty;
  let changed = 0;
  for (let index = 0; index < model.cells.length; index += 1) {
    const cell = model.cells.get(index) as unknown as { type: string; outputs?: IOutputsLike };
    if (cell.type === 'code' && cell.outputs) {
      changed += showPictures(cell.outputs, alive);
    }
  }
  if (changed && !wasDirty) {
    model.dirty = false;
  }
}
