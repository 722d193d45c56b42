// A job in the sidebar: its status line and place in line, its timings, its owner in an admin's list, and a cancel
// button only while it can be cancelled.

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
  it('cancels a running job through the client', async () => {
    const cancel = vi.fn().mockResolvedValue(undefined);
    const changed = vi.fn();
    const client = { cancel } as unknown as NDIFClient;
    const node = renderJob(job({ status: 'running', phase: 'running' }), client, changed);
    const button = node.querySelector('button') as HTMLButtonElement;
    button.click();
    await vi.waitFor(() => expect(changed).toHaveBeenCalled());
    expect(cancel).toHaveBeenCalledWith('j1');
    expect(node.dataset.status).toBe('running');
  });

  it("shows a failed job's error and no cancel button", () => {
    const node = renderJob(
      job({ status: 'error', error: { type: 'ExecutionError', message: 'shape mismatch' } }),
      {} as NDIFClient,
      () => undefined
    );
    expect(node.querySelector('button')).toBeNull();
    expect(node.querySelector('.ndif-job-message')?.textContent).toBe('ExecutionError: shape mismatch');
  });

  it('shows the place in line of a queued job in its status', () => {
    const node = renderJob(job({ status: 'queued', queue_position: 4 }), {} as NDIFClient, () => undefined);
    expect(node.querySelector('.ndif-job-status')?.textContent).toBe('queued · 4th in line');
    expect(node.dataset.status).toBe('queued');
    expect(node.querySelector('button')?.textContent).toBe('Cancel');
  });

  it('labels the owner only when asked to', () => {
    const plain = renderJob(job({ owner: 'bob' }), {} as NDIFClient, () => undefined);
    expect(plain.querySelector('.ndif-job-owner')).toBeNull();
    const labelled = renderJob(job({ owner: 'bob' }), {} as NDIFClient, () => undefined, true);
    const owner = labelled.querySelector('.ndif-job-owner') as HTMLElement;
    expect(owner.textContent).toBe('bob');
    expect(owner.title).toBe('sent by bob');
    expect(labelled.querySelector('.ndif-job-head')?.textContent).toBe('donegenerate on tinybob');
  });
});
