// The JupyterLab plugin: the NDIF sidebar, inserting module paths into the active cell, and "New NDIF notebook".

import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { INotebookTracker } from '@jupyterlab/notebook';

import { NDIFClient } from './api';
import { outputExpression } from './paths';
import { NDIFPanel } from './panel';
import { SAMPLE_CELLS } from './sample';

const NEW_NOTEBOOK = 'ndif:new-notebook';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'ndif-jupyter-labextension:plugin',
  description: 'Models, module trees and jobs of the ndif server extension, in a sidebar.',
  autoStart: true,
  requires: [ILabShell, INotebookTracker],
  optional: [ILauncher, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell,
    notebooks: INotebookTracker,
    launcher: ILauncher | null,
    palette: ICommandPalette | null
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
    const panel = new NDIFPanel(new NDIFClient(app.serviceManager.serverSettings), insert);
    panel.title.label = 'NDIF';
    shell.add(panel, 'right', { rank: 600 });

    app.commands.addCommand(NEW_NOTEBOOK, {
      label: 'New NDIF notebook',
      caption: 'A notebook with the ndif magics loaded and a sample %%ndif generate cell',
      execute: async () => {
        const widget = await app.commands.execute('notebook:create-new', { kernelName: 'python3' });
        await widget.context.ready;
        widget.context.model.sharedModel.insertCells(
          0,
          SAMPLE_CELLS.map(source => ({ cell_type: 'code', source }))
        );
        const cells = widget.context.model.sharedModel.cells;
        if (cells.length > SAMPLE_CELLS.length && cells[cells.length - 1].getSource() === '') {
          widget.context.model.sharedModel.deleteCell(cells.length - 1);
        }
        return widget;
      }
    });
    launcher?.add({ command: NEW_NOTEBOOK, category: 'Notebook', rank: 10 });
    palette?.addItem({ command: NEW_NOTEBOOK, category: 'NDIF' });
  }
};

export default plugin;
