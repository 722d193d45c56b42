// The user's jobs, refreshed while the sidebar is shown: status, timings, errors, and a cancel button.

import { IJob, NDIFClient } from './api';
import { shortDuration } from './paths';

const FINISHED = new Set(['done', 'error', 'cancelled']);

/** One job as a list item; running and queued jobs get a cancel button. */
export function renderJob(job: IJob, client: NDIFClient, onChanged: () => void): HTMLElement {
  const item = document.createElement('li');
  item.className = `ndif-job ndif-job-${job.status}`;
  item.dataset.job = job.id;
  item.dataset.status = job.status;
  const head = document.createElement('div');
  head.className = 'ndif-job-head';
  const status = document.createElement('span');
  status.className = 'ndif-job-status';
  status.textContent = statusText(job);
  const what = document.createElement('span');
  what.className = 'ndif-job-what';
  what.textContent = `${job.kind} on ${job.model}`;
  head.append(status, what);
  item.appendChild(head);
  const timing = document.createElement('div');
  timing.className = 'ndif-job-timing';
  timing.textContent = timingText(job);
  item.appendChild(timing);
  if (job.error) {
    const error = document.createElement('div');
    error.className = 'ndif-job-message';
    error.textContent = `${job.error.type}: ${job.error.message}`;
    item.appendChild(error);
  }
  if (!FINISHED.has(job.status)) {
    const cancel = document.createElement('button');
    cancel.className = 'jp-mod-styled ndif-job-cancel';
    cancel.textContent = 'Cancel';
    cancel.addEventListener('click', async () => {
      cancel.disabled = true;
      await client.cancel(job.id).catch(() => undefined);
      onChanged();
    });
    item.appendChild(cancel);
  }
  return item;
}

export function statusText(job: IJob): string {
  if (job.status === 'running') {
    const step = job.steps ? ` ${Math.min((job.step ?? 0) + 1, job.steps)}/${job.steps}` : '';
    return `${job.phase ?? 'running'}${step}`;
  }
  return job.status;
}

export function timingText(job: IJob): string {
  const parts = [];
  if (job.queued_seconds) {
    parts.push(`queued ${shortDuration(job.queued_seconds)}`);
  }
  if (job.run_seconds) {
    parts.push(`ran ${shortDuration(job.run_seconds)}`);
  }
  if (job.result_bytes) {
    parts.push(`${(job.result_bytes / 1e6).toFixed(1)} MB`);
  }
  return parts.join(' · ');
}
