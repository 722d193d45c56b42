// A served model's module tree as an expandable list, one line per module (name, class, parameter count); clicking a
// module hands its dotted path to a callback.

import { IModuleNode } from './api';
import { pythonPath, shortCount } from './paths';

/** The tree of one model. Layers of a long list start folded; the first two levels start open. */
export function renderModuleTree(root: IModuleNode, onPick: (dotted: string) => void): HTMLElement {
  const list = document.createElement('ul');
  list.className = 'ndif-tree';
  for (const child of root.children) {
    list.appendChild(renderNode(child, child.name, 1, onPick));
  }
  return list;
}

function renderNode(node: IModuleNode, dotted: string, depth: number, onPick: (dotted: string) => void): HTMLElement {
  const item = document.createElement('li');
  item.className = 'ndif-tree-item';
  item.dataset.path = dotted;
  const row = document.createElement('div');
  row.className = 'ndif-tree-row';
  const toggle = document.createElement('span');
  toggle.className = 'ndif-tree-toggle';
  const label = document.createElement('span');
  label.className = 'ndif-tree-label';
  label.textContent = node.name;
  label.title = `${pythonPath(dotted)} (${node.class}) — click to insert ${pythonPath(dotted)}.output`;
  const moduleClass = document.createElement('span');
  moduleClass.className = 'ndif-tree-class';
  moduleClass.textContent = node.class;
  moduleClass.title = node.class;
  const count = document.createElement('span');
  count.className = 'ndif-tree-count';
  count.textContent = node.parameters ? shortCount(node.parameters) : '';
  count.title = node.parameters ? `${node.parameters.toLocaleString()} parameters` : '';
  row.append(toggle, label, moduleClass, count);
  item.appendChild(row);
  label.addEventListener('click', () => onPick(dotted));
  if (node.children.length > 0) {
    const children = document.createElement('ul');
    children.className = 'ndif-tree';
    for (const child of node.children) {
      children.appendChild(renderNode(child, `${dotted}.${child.name}`, depth + 1, onPick));
    }
    item.appendChild(children);
    setOpen(item, toggle, depth <= 1);
    toggle.addEventListener('click', () => setOpen(item, toggle, !item.classList.contains('ndif-open')));
  }
  return item;
}

function setOpen(item: HTMLElement, toggle: HTMLElement, open: boolean): void {
  item.classList.toggle('ndif-open', open);
  toggle.textContent = open ? '▾' : '▸';
}
