// Where a job came from, as the sidebar shows it: the notebook's name, its path in this server, and when it was sent.

/** The file name of a notebook's path: `sidebar.ipynb` for `/home/alice/work/sidebar.ipynb`. */
export function notebookName(path: string): string {
  return path.replace(/\\/g, '/').split('/').pop() ?? '';
}

/**
 * The path in this server's contents (`work/sidebar.ipynb`) of a notebook as its kernel knew it: an absolute path
 * inside the server's folder `serverRoot`, or a path already relative to it. Null for a notebook outside that folder.
 */
export function contentsPath(notebook: string, serverRoot: string): string | null {
  const path = notebook.replace(/\\/g, '/');
  if (!path.startsWith('/') && !/^[A-Za-z]:\//.test(path)) {
    return path;
  }
  if (!serverRoot) {
    return null;
  }
  const root = serverRoot.replace(/\\/g, '/').replace(/\/+$/, '');
  return path.startsWith(`${root}/`) ? path.slice(root.length + 1) : null;
}

/** When a job was sent (seconds since the epoch), in local time: `14:03:07` today, `2026-11-29 14:03` before. */
export function sentText(created: number, now: Date = new Date()): string {
  const sent = new Date(created * 1000);
  const two = (n: number) => String(n).padStart(2, '0');
  const time = `${two(sent.getHours())}:${two(sent.getMinutes())}`;
  if (sent.toDateString() === now.toDateString()) {
    return `${time}:${two(sent.getSeconds())}`;
  }
  return `${sent.getFullYear()}-${two(sent.getMonth() + 1)}-${two(sent.getDate())} ${time}`;
}
