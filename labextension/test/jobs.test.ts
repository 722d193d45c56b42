// A job in the sidebar: its status line and place in line, its notebook (a link to its cell), prompt and time sent, its
// timings, its owner in an admin's list, and a cancel button only while it can be cancelled.

// @vitest-environment jsdom

import { describe, expect, it, vi } from 'vitest';

import { NDIFClient } from '../src/api';
import { sampleJob } from './sample_job';
import { ordinal, queuePlaceText, renderJob, showOwners, statusText, timingText } from '../src/jobs';

const job = sampleJob;

describe('statusText', () => {
  it('shows the phase and the step of a running generation', () => {
    expect(statusText(job({ status: 'running', phase: 'running', step: 1, steps: 3 }))).toBe('running 2/3');
    expect(statusText(job({ status: 'running', phase: 'loading model' }))).toBe('loading model');
    expect(statusText(job({ status: 'error' }))).toBe('error');
  });

  it("shows a queued job's place in line, and plain `queued` from servers that do not send it", () => {
    expect(statusText(job({ status: 'queued', queue_position: 1 }))).toBe('queued · next in line');
    expect(statusText(job({ status: 'queued', queue_position: 3 }))).toBe('queued · 3rd in line');
    expect(statusText(job({ status: 'queued', queue_position: null }))).toBe('queued');
    expect(statusText(job({ status: 'queued' }))).toBe('queued');
    expect(statusText(job({ status: 'done', queue_position: 2 }))).toBe('done');
  });
});

describe('ordinal', () => {
  it('uses st, nd, rd and th, with th for the teens', () => {
    expect([1, 2, 3, 4, 10, 11, 12, 13, 14, 21, 22, 23, 101, 111, 112, 113, 122].map(ordinal)).toEqual([
      '1st',
      '2nd',
      '3rd',
      '4th',
      '10th',
      '11th',
      '12th',
      '13th',
      '14th',
      '21st',
      '22nd',
      '23rd',
      '101st',
      '111th',
      '112th',
      '113th',
      '122nd'
    ]);
  });
});

describe('queuePlaceText', () => {
  it('says next for the first place and nothing for a missing or impossible one', () => {
    expect(queuePlaceText(1)).toBe('next in line');
    expect(queuePlaceText(2)).toBe('2nd in line');
    expect(queuePlaceText(12)).toBe('12th in line');
    expect(queuePlaceText(null)).toBe('');
    expect(queuePlaceText(undefined)).toBe('');
    expect(queuePlaceText(0)).toBe('');
    expect(queuePlaceText(2.5)).toBe('');
  });
});

describe('showOwners', () => {
  it('labels owners only when the list holds more than one user', () => {
    expect(showOwners([])).toBe(false);
    expect(showOwners([{ owner: 'alice' }, { owner: 'alice' }])).toBe(false);
    expect(showOwners([{ owner: 'alice' }, { owner: 'bob' }, { owner: 'alice' }])).toBe(true);
    expect(showOwners([{ owner: 'alice' }, { owner: '' }])).toBe(false);
  });
});

describe('timingText', () => {
  it('lists queue time, run time and result size', () => {
    expect(timingText(job({}))).toBe('queued 0.1 s · ran 3.4 s · 2.5 MB');
  });

  it('says when the job ran in a batch with other jobs, and not when it ran alone', () => {
    expect(timingText(job({ batch: 4 }))).toBe('queued 0.1 s · ran 3.4 s · in a batch of 4 · 2.5 MB');
    expect(timingText(job({ batch: 1 }))).toBe('queued 0.1 s · ran 3.4 s · 2.5 MB');
  });
});

describe('renderJob', () => {
  const plain = { client: {} as NDIFClient, onChanged: () => undefined };

  it('cancels a running job through the client', async () => {
    const cancel = vi.fn().mockResolvedValue(undefined);
    const changed = vi.fn();
    const client = { cancel } as unknown as NDIFClient;
    const node = renderJob(job({ status: 'running', phase: 'running' }), { client, onChanged: changed });
    const button = node.querySelector('button') as HTMLButtonElement;
    button.click();
    await vi.waitFor(() => expect(changed).toHaveBeenCalled());
    expect(cancel).toHaveBeenCalledWith('j1');
    expect(node.dataset.status).toBe('running');
  });

  it("shows a failed job's error and no cancel button", () => {
    const node = renderJob(
      job({ status: 'error', error: { type: 'ExecutionError', message: 'shape mismatch' } }),
      plain
    );
    expect(node.querySelector('button')).toBeNull();
    expect(node.querySelector('.ndif-job-message')?.textContent).toBe('ExecutionError: shape mismatch');
  });

  it('shows the place in line of a queued job in its status', () => {
    const node = renderJob(job({ status: 'queued', queue_position: 4 }), plain);
    expect(node.querySelector('.ndif-job-status')?.textContent).toBe('queued · 4th in line');
    expect(node.dataset.status).toBe('queued');
    expect(node.querySelector('button')?.textContent).toBe('Cancel');
  });

  it('labels the owner only when asked to', () => {
    const unlabelled = renderJob(job({ owner: 'bob' }), plain);
    expect(unlabelled.querySelector('.ndif-job-owner')).toBeNull();
    const labelled = renderJob(job({ owner: 'bob' }), { ...plain, showOwner: true });
    const owner = labelled.querySelector('.ndif-job-owner') as HTMLElement;
    expect(owner.textContent).toBe('bob');
    expect(owner.title).toBe('sent by bob');
    expect(labelled.querySelector('.ndif-job-head')?.textContent).toBe('donegenerate on tinybob');
  });

  it('shows the notebook, the first words of the prompt and when it was sent, and opens the notebook on a click', () => {
    const sent = new Date();
    sent.setHours(9, 5, 7);
    const open = vi.fn();
    const origin = { notebook: '/home/alice/work/sidebar.ipynb', cell: 'c-1' };
    const shown = job({ origin, prompt: 'The Eiffel Tower is in the city of', created: sent.getTime() / 1000 });
    const node = renderJob(shown, { ...plain, onOpenOrigin: open });
    const notebook = node.querySelector('.ndif-job-origin .ndif-job-notebook') as HTMLButtonElement;
    expect(notebook.tagName).toBe('BUTTON');
    expect(notebook.textContent).toBe('sidebar.ipynb');
    expect(notebook.title).toBe('/home/alice/work/sidebar.ipynb: open it at the cell that sent this job');
    expect(node.querySelector('.ndif-job-sent')?.textContent).toBe('sent 09:05:07');
    expect(node.querySelector('.ndif-job-prompt')?.textContent).toBe('“The Eiffel Tower is in the city of”');
    notebook.click();
    expect(open).toHaveBeenCalledWith(shown);
    expect(node.querySelector('.ndif-job-origin-problem')).toBeNull();
  });

  it('says why the notebook could not be opened, and shows a job from a server without origins', () => {
    const origin = { notebook: 'sidebar.ipynb', cell: 'c-1' };
    const failed = renderJob(job({ origin }), { ...plain, onOpenOrigin: () => undefined, originProblem: 'gone' });
    expect(failed.querySelector('.ndif-job-origin-problem')?.textContent).toBe('gone');

    const notOpenable = renderJob(job({ origin }), plain);
    expect(notOpenable.querySelector('.ndif-job-notebook')?.tagName).toBe('SPAN');

    const old = renderJob(job({}), plain);
    expect(old.querySelector('.ndif-job-notebook')).toBeNull();
    expect(old.querySelector('.ndif-job-prompt')).toBeNull();
    expect(old.querySelector('.ndif-job-sent')?.textContent).toMatch(/^sent \d{4}-\d{2}-\d{2} \d{2}:\d{2}$/);
  });
});
