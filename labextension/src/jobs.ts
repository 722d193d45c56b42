// The user's jobs, refreshed while the sidebar is shown: status, place in line, owner, the notebook and prompt each
// came from, when it was sent, timings, errors, and a cancel button.

import { IJob, NDIFClient } from './api';
import { notebookName, sentText } from './origin';
import { shortDuration } from './paths';

const FINISHED = new Set(['done', 'error', 'cancelled']);

/** What a job's list item does and says beyond the job itself. */
export interface IJobView {
  client: Pick<NDIFClient, 'cancel'>;
  /** Called once a cancel was asked for, to refresh the list. */
  onChanged: () => void;
  /** Label who sent the job (in a list of several users' jobs). */
  showOwner?: boolean;
  /** Open the notebook the job came from at its cell; without it the notebook's name is plain text. */
  onOpenOrigin?: (job: IJob) => void;
  /** Why the job's notebook or cell could not be opened, the last time it was asked for. */
  originProblem?: string;
}

/** One job as a list item; running and queued jobs get a cancel button. */
export function renderJob(job: IJob, view: IJobView): HTMLElement {
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
  if (view.showOwner && job.owner) {
    const owner = document.createElement('span');
    owner.className = 'ndif-job-owner';
    owner.textContent = job.owner;
    owner.title = `sent by ${job.owner}`;
    head.appendChild(owner);
  }
  item.append(head, renderOrigin(job, view));
  if (job.prompt) {
    const prompt = document.createElement('div');
    prompt.className = 'ndif-job-prompt';
    prompt.textContent = `“${job.prompt}”`;
    prompt.title = job.prompt;
    item.appendChild(prompt);
  }
  const timing = document.createElement('div');
  timing.className = 'ndif-job-timing';
  timing.textContent = timingText(job);
  item.appendChild(timing);
  if (view.originProblem) {
    item.appendChild(line('ndif-job-origin-problem', view.originProblem));
  }
  if (job.error) {
    item.appendChild(line('ndif-job-message', `${job.error.type}: ${job.error.message}`));
  }
  if (!FINISHED.has(job.status)) {
    const cancel = document.createElement('button');
    cancel.className = 'jp-mod-styled ndif-job-cancel';
    cancel.textContent = 'Cancel';
    cancel.addEventListener('click', async () => {
      cancel.disabled = true;
      await view.client.cancel(job.id).catch(() => undefined);
      view.onChanged();
    });
    item.appendChild(cancel);
  }
  return item;
}

/** The notebook the job came from (a link to its cell when it can be opened) and when it was sent. */
function renderOrigin(job: IJob, view: IJobView): HTMLElement {
  const origin = document.createElement('div');
  origin.className = 'ndif-job-origin';
  const path = job.origin?.notebook;
  if (path) {
    const name = notebookName(path);
    const open = view.onOpenOrigin;
    const notebook = document.createElement(open ? 'button' : 'span');
    notebook.className = 'ndif-job-notebook';
    notebook.textContent = name;
    notebook.title = open ? `${path}: open it at the cell that sent this job` : path;
    if (open) {
      notebook.addEventListener('click', () => open(job));
    }
    origin.appendChild(notebook);
  }
  const sent = document.createElement('span');
  sent.className = 'ndif-job-sent';
  sent.textContent = `sent ${sentText(job.created)}`;
  sent.title = new Date(job.created * 1000).toLocaleString();
  origin.appendChild(sent);
  return origin;
}

function line(className: string, text: string): HTMLElement {
  const node = document.createElement('div');
  node.className = className;
  node.textContent = text;
  return node;
}

export function statusText(job: IJob): string {
  if (job.status === 'running') {
    const step = job.steps ? ` ${Math.min((job.step ?? 0) + 1, job.steps)}/${job.steps}` : '';
    return `${job.phase ?? 'running'}${step}`;
  }
  const place = job.status === 'queued' ? queuePlaceText(job.queue_position) : '';
  return place ? `${job.status} · ${place}` : job.status;
}

/** `1st`, `2nd`, `3rd`, `4th`, `11th`, `21st`, `112th`. */
export function ordinal(n: number): string {
  const tens = n % 100;
  const suffixes: Record<number, string> = { 1: 'st', 2: 'nd', 3: 'rd' };
  const suffix = tens >= 11 && tens <= 13 ? 'th' : (suffixes[n % 10] ?? 'th');
  return `${n}${suffix}`;
}

/** A queued job's place in its model's queue as `next in line` or `3rd in line`; empty when the server gave none. */
export function queuePlaceText(position: number | null | undefined): string {
  if (position === null || position === undefined || !Number.isInteger(position) || position < 1) {
    return '';
  }
  return position === 1 ? 'next in line' : `${ordinal(position)} in line`;
}

/** Whether to label jobs with their owners: only when the list holds more than one user's jobs (an admin's view). */
export function showOwners(jobs: Pick<IJob, 'owner'>[]): boolean {
  return new Set(jobs.map(job => job.owner).filter(owner => owner)).size > 1;
}

export function timingText(job: IJob): string {
  const parts = [];
  if (job.queued_seconds) {
    parts.push(`queued ${shortDuration(job.queued_seconds)}`);
  }
  if (job.run_seconds) {
    parts.push(`ran ${shortDuration(job.run_seconds)}`);
  }
  if (job.batch && job.batch > 1) {
    parts.push(`in a batch of ${job.batch}`);
  }
  if (job.result_bytes) {
    parts.push(`${(job.result_bytes / 1e6).toFixed(1)} MB`);
  }
  return parts.join(' · ');
}
