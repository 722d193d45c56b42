// Opening the notebook a job came from at the cell that sent it, or saying why that cannot be done.

import type { JupyterFrontEnd } from '@jupyterlab/application';
import type { NotebookPanel } from '@jupyterlab/notebook';

import { IJobOrigin } from './api';
import { contentsPath, notebookName } from './origin';

/** Why a job's notebook or cell cannot be shown; its message is said in the sidebar. */
export class OriginProblem extends Error {}

/**
 * Open (or bring forward) the job's notebook and select and scroll to the cell that sent it. `serverRoot` is the
 * Jupyter server's folder, under which a kernel's absolute notebook path lies. Rejects with an OriginProblem when the
 * notebook is not in this server or no longer exists, or the cell is no longer in it.
 */
export async function openOrigin(app: JupyterFrontEnd, origin: IJobOrigin, serverRoot: string): Promise<void> {
  const name = notebookName(origin.notebook ?? '') || 'the notebook';
  const path = origin.notebook ? contentsPath(origin.notebook, serverRoot) : null;
  if (path === null) {
    throw new OriginProblem(`${name} is not in this Jupyter server's folder`);
  }
  try {
    await app.serviceManager.contents.get(path, { content: false });
  } catch {
    throw new OriginProblem(`${name} no longer exists: it was moved, renamed or deleted`);
  }
  const panel = (await app.commands.execute('docmanager:open', { path })) as NotebookPanel | undefined;
  if (!panel?.content?.widgets) {
    throw new OriginProblem(`${name} did not open as a notebook`);
  }
  await panel.context.ready;
  app.shell.activateById(panel.id);
  if (!origin.cell) {
    return;
  }
  const notebook = panel.content;
  const index = notebook.widgets.findIndex(cell => cell.model.id === origin.cell);
  if (index < 0) {
    throw new OriginProblem(`the cell that sent this job is no longer in ${name}`);
  }
  notebook.mode = 'command';
  notebook.deselectAll();
  notebook.activeCellIndex = index;
  await notebook.scrollToItem(index, 'center');
  notebook.activate();
}
