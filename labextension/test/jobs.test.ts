// A job in the sidebar: its status line, its timings, and a cancel button only while it can be cancelled.

// @vitest-environment jsdom

import { describe, expect, it, vi } from 'vitest';

import { IJob, NDIFClient } from '../src/api';
import { renderJob, statusText, timingText } from '../src/jobs';

function job(overrides: Partial<IJob>): IJob {
  return {
    id: 'j1',
    model: 'tiny',
    kind: 'generate',
    owner: 'alice',
    status: 'done',
    phase: null,
    step: null,
    steps: null,
    created: 0,
    started: 0,
    finished: 1,
    queued_seconds: 0.12,
    run_seconds: 3.4,
    result_bytes: 2_500_000,
    error: null,
    ...overrides
  };
}

describe('statusText', () => {
  it('shows the phase and the step of a running generation', () => {
    expect(statusText(job({ status: 'running', phase: 'running', step: 1, steps: 3 }))).toBe('running 2/3');
    expect(statusText(job({ status: 'running', phase: 'loading model' }))).toBe('loading model');
    expect(statusText(job({ status: 'error' }))).toBe('error');
  });
});

describe('timingText', () => {
  it('lists queue time, run time and result size', () => {
    expect(timingText(job({}))).toBe('queued 0.1 s · ran 3.4 s · 2.5 MB');
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
});
