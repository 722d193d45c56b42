// The JupyterLab plugin: the NDIF sidebar, inserting module paths into the active cell, opening the notebook a job
// came from, the saved pictures of activation browsers whose widgets are gone, and "New NDIF notebook".

import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker } from '@jupyterlab/notebook';

import { NDIFClient } from './api';
import { openOrigin } from './open_origin';
import { outputExpression } from './paths';
import { NDIFPanel } from './panel';
import { showPicturesOfGoneWidgets } from './pictures';
import { sampleNotebook } from './sample';

const NEW_NOTEBOOK = 'ndif:new-notebook';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'ndif-jupyter-labextension:plugin',
  description: 'Models, module trees and jobs of the ndif server extension, in a sidebar.',
  autoStart: true,
  requires: [ILabShell, INotebookTracker],
  optional: [ILauncher, ICommandPalette, IDefaultFileBrowser],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    notebooks: INotebookTracker,
    launcher: ILauncher | null,
    palette: ICommandPalette | null,
    fileBrowser: IDefaultFileBrowser | null
  ) => {
    const insert = (dotted: string) => {
      const editor = notebooks.activeCell?.editor;
      if (!editor) {
        return;
      }
      const text = outputExpression(dotted);
      const cursor = editor.getCursorPosition();
      const offset = editor.getOffsetAt(cursor);
      editor.model.sharedModel.updateSource(offset, offset, text);
      editor.setCursorPosition(editor.getPositionAt(offset + text.length) ?? cursor);
      editor.focus();
    };
    const serverRoot = PageConfig.getOption('serverRoot');
    const panel = new NDIFPanel(new NDIFClient(app.serviceManager.serverSettings), insert, origin =>
      openOrigin(app, origin, serverRoot)
    );
    panel.title.label = 'NDIF';
    shell.add(panel, 'right', { rank: 600 });
    notebooks.widgetAdded.connect((_, notebook) => void showPicturesOfGoneWidgets(notebook));

    // The notebook is written with its cells before it opens: changing the cells of a notebook that is still
    // rendering its first cell fails inside JupyterLab.
    app.commands.addCommand(NEW_NOTEBOOK, {
      label: 'New NDIF notebook',
      caption: 'A notebook with the ndif magics loaded and a sample %%ndif generate cell',
      execute: async args => {
        const folder = typeof args.cwd === 'string' ? args.cwd : (fileBrowser?.model.path ?? '');
        const contents = app.serviceManager.contents;
        const untitled = await contents.newUntitled({ path: folder, type: 'notebook' });
        await contents.save(untitled.path, { type: 'notebook', format: 'json', content: sampleNotebook() });
        return app.commands.execute('docmanager:open', {
          path: untitled.path,
          factory: 'Notebook',
          kernel: { name: 'python3' }
        });
      }
    });
    launcher?.add({ command: NEW_NOTEBOOK, category: 'Notebook', rank: 10 });
    palette?.addItem({ command: NEW_NOTEBOOK, category: 'NDIF' });
  }
};

export default plugin;
