// Where a job came from: a notebook's name, its path in this server's contents, and when the job was sent.

import { describe, expect, it } from 'vitest';

import { contentsPath, notebookName, sentText } from '../src/origin';

describe('notebookName', () => {
  it('is the last part of the path, with either separator', () => {
    expect(notebookName('/home/alice/work/sidebar.ipynb')).toBe('sidebar.ipynb');
    expect(notebookName('C:\\Users\\alice\\a.ipynb')).toBe('a.ipynb');
    expect(notebookName('a.ipynb')).toBe('a.ipynb');
  });
});

describe('contentsPath', () => {
  it("makes a kernel's absolute path relative to the server's folder", () => {
    expect(contentsPath('/home/alice/work/sidebar.ipynb', '/home/alice')).toBe('work/sidebar.ipynb');
    expect(contentsPath('/home/alice/work/sidebar.ipynb', '/home/alice/')).toBe('work/sidebar.ipynb');
    expect(contentsPath('C:\\Users\\alice\\work\\a.ipynb', 'C:/Users/alice')).toBe('work/a.ipynb');
    expect(contentsPath('/srv/a.ipynb', '/')).toBe('srv/a.ipynb');
  });

  it('keeps a relative path, and gives null outside the folder or when the folder is unknown', () => {
    expect(contentsPath('work/sidebar.ipynb', '/home/alice')).toBe('work/sidebar.ipynb');
    expect(contentsPath('/home/alicia/a.ipynb', '/home/alice')).toBeNull();
    expect(contentsPath('/tmp/a.ipynb', '/home/alice')).toBeNull();
    expect(contentsPath('/home/alice/a.ipynb', '')).toBeNull();
  });
});

describe('sentText', () => {
  const now = new Date(2026, 10, 30, 18, 0, 0);

  it('gives the time of a job sent today, and the date too before', () => {
    expect(sentText(new Date(2026, 10, 30, 14, 3, 7).getTime() / 1000, now)).toBe('14:03:07');
    expect(sentText(new Date(2026, 10, 30, 0, 0, 1).getTime() / 1000, now)).toBe('00:00:01');
    expect(sentText(new Date(2026, 10, 29, 23, 59, 59).getTime() / 1000, now)).toBe('2026-11-29 23:59');
  });
});
