// A job document as the server sends it, for the sidebar's tests: a finished generation unless overridden.

import { IJob } from '../src/api';

export function sampleJob(overrides: Partial<IJob>): IJob {
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
