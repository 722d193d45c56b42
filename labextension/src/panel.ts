// The NDIF sidebar: the served models with their module trees and queues above, the jobs below in a section of their
// own that keeps its place however long the trees are; each part scrolls on its own; refreshed while it is visible.

import { Widget } from '@lumino/widgets';

import { IJob, IJobOrigin, IServedModel, IUser, MissingExtensionError, NDIFClient } from './api';
import { renderJob, showOwners } from './jobs';
import { renderModuleTree } from './tree';

const REFRESH_MS = 2000;
/** Models (their queues and loaded state) are asked for on every fifth refresh, jobs on every one. */
const MODELS_EVERY = 5;

export class NDIFPanel extends Widget {
  private readonly modelsNode = document.createElement('div');
  private readonly jobsNode = document.createElement('ul');
  private readonly messageNode = document.createElement('div');
  private readonly userNode = document.createElement('div');
  private timer: number | undefined;
  /** The models the trees were built for, so that a refresh rebuilds them only when the served models change. */
  private modelsKey = '';
  private readonly summaries = new Map<string, HTMLElement>();
  private modelsPending = false;
  private refreshes = 0;
  private backendText = '';
  private modelsProblem: unknown;
  private jobsProblem: unknown;
  private jobs: IJob[] = [];
  /** What the job list shows, so that an unchanged list is left as it is (a tooltip or a click stays on it). */
  private jobsKey = '';
  /** Why a job's notebook or cell could not be opened, by job id, until it opens. */
  private readonly originProblems = new Map<string, string>();

  /** `openOrigin` opens the notebook a job came from at its cell, or rejects saying why it cannot. */
  constructor(
    private readonly client: NDIFClient,
    private readonly onPick: (dotted: string) => void,
    private readonly openOrigin?: (origin: IJobOrigin) => Promise<void>
  ) {
    super();
    this.id = 'ndif-panel';
    this.addClass('ndif-panel');
    this.title.caption = 'NDIF: models, module trees and jobs';
    this.messageNode.className = 'ndif-message';
    this.modelsNode.className = 'ndif-models';
    this.jobsNode.className = 'ndif-jobs';
    this.userNode.className = 'ndif-user';
    this.node.append(
      section('ndif-models-section', heading('Models'), this.messageNode, this.modelsNode),
      section('ndif-jobs-section', heading('Jobs'), this.userNode, this.jobsNode)
    );
  }

  protected onAfterShow(): void {
    this.refreshes = 0;
    this.refresh();
    this.timer = window.setInterval(() => this.refresh(), REFRESH_MS);
  }

  protected onBeforeHide(): void {
    window.clearInterval(this.timer);
  }

  dispose(): void {
    window.clearInterval(this.timer);
    super.dispose();
  }

  /** Jobs, and every MODELS_EVERY times the models (their queues and loaded state); a models request still under
   * way is not sent again. */
  private refresh(): void {
    this.refreshes += 1;
    if (!this.modelsPending && (this.refreshes - 1) % MODELS_EVERY === 0) {
      this.modelsPending = true;
      void this.refreshModels().finally(() => (this.modelsPending = false));
    }
    void this.refreshJobs();
  }

  async refreshModels(): Promise<void> {
    try {
      const { backend, models, user } = await this.client.models();
      this.modelsProblem = undefined;
      this.backendText = models.length ? `Backend: ${backend}` : 'The server serves no models.';
      this.userNode.textContent = userText(user);
      const key = JSON.stringify(models.map(model => [model.name, model.class]));
      if (key !== this.modelsKey) {
        this.modelsKey = key;
        this.summaries.clear();
        this.modelsNode.replaceChildren(...models.map(model => this.renderModel(model, models.length === 1)));
      } else {
        for (const model of models) {
          const summary = this.summaries.get(model.name);
          if (summary) {
            fillSummary(summary, model);
          }
        }
      }
    } catch (error) {
      this.modelsProblem = error;
    }
    this.showMessage();
  }

  async refreshJobs(): Promise<void> {
    let jobs: IJob[];
    try {
      jobs = await this.client.jobs();
      this.jobsProblem = undefined;
    } catch (error) {
      this.jobsProblem = error;
      this.showMessage();
      return;
    }
    this.showMessage();
    this.jobs = jobs;
    this.renderJobs();
  }

  private renderJobs(): void {
    const key = JSON.stringify([this.jobs, [...this.originProblems]]);
    if (key === this.jobsKey) {
      return;
    }
    this.jobsKey = key;
    const newestFirst = [...this.jobs].reverse();
    const showOwner = showOwners(this.jobs);
    const onChanged = () => void this.refreshJobs();
    const onOpenOrigin = this.openOrigin ? (job: IJob) => void this.openJobOrigin(job) : undefined;
    this.jobsNode.replaceChildren(
      ...(newestFirst.length
        ? newestFirst.map(job =>
            renderJob(job, {
              client: this.client,
              onChanged,
              showOwner,
              onOpenOrigin,
              originProblem: this.originProblems.get(job.id)
            })
          )
        : [emptyNote('No jobs yet: run a cell with --server (or device_map="server").')])
    );
  }

  /** Open the job's notebook at its cell; what went wrong stays on show under the job until it opens. */
  async openJobOrigin(job: IJob): Promise<void> {
    if (!this.openOrigin || !job.origin) {
      return;
    }
    try {
      await this.openOrigin(job.origin);
      this.originProblems.delete(job.id);
    } catch (error) {
      this.originProblems.set(job.id, error instanceof Error ? error.message : String(error));
    }
    this.renderJobs();
  }

  private renderModel(model: IServedModel, open: boolean): HTMLElement {
    const section = document.createElement('details');
    section.className = 'ndif-model';
    section.dataset.model = model.name;
    section.open = open;
    const summary = document.createElement('summary');
    fillSummary(summary, model);
    this.summaries.set(model.name, summary);
    section.append(summary, renderModuleTree(model.modules, this.onPick));
    return section;
  }

  /** A problem of either request, or else the backend line. */
  private showMessage(): void {
    const error = this.modelsProblem ?? this.jobsProblem;
    const missing = error instanceof MissingExtensionError;
    if (error === undefined) {
      this.messageNode.textContent = this.backendText;
    } else {
      this.messageNode.textContent = missing ? error.message : `The server extension answered: ${String(error)}`;
    }
    this.messageNode.classList.toggle('ndif-missing', missing);
    if (missing) {
      this.modelsKey = '';
      this.summaries.clear();
      this.modelsNode.replaceChildren();
      this.jobs = [];
      this.jobsKey = '';
      this.jobsNode.replaceChildren();
      this.userNode.textContent = '';
    }
  }
}

/** The jobs waiting for and running on a model, as `2 running · 5 queued`; empty when there are none. */
export function modelLoadText(model: Pick<IServedModel, 'queued' | 'running'>): string {
  const parts = [];
  if (model.running) {
    parts.push(`${model.running} running`);
  }
  if (model.queued) {
    parts.push(`${model.queued} queued`);
  }
  return parts.join(' · ');
}

/** Who the server thinks is asking, as `signed in as alice`; an admin is told the list holds every user's jobs. */
export function userText(user: IUser | undefined): string {
  if (!user?.name) {
    return '';
  }
  return `signed in as ${user.name}${user.admin ? " (admin: all users' jobs)" : ''}`;
}

function fillSummary(summary: HTMLElement, model: IServedModel): void {
  const nodes: (Node | string)[] = [`${model.name} (${model.class}${model.loaded ? ', loaded' : ''})`];
  const load = modelLoadText(model);
  if (load) {
    const label = document.createElement('span');
    label.className = 'ndif-model-load';
    label.textContent = load;
    nodes.push(label);
  }
  summary.replaceChildren(...nodes);
}

function section(className: string, ...children: HTMLElement[]): HTMLElement {
  const node = document.createElement('section');
  node.className = `ndif-section ${className}`;
  node.append(...children);
  return node;
}

function heading(text: string): HTMLElement {
  const node = document.createElement('h3');
  node.className = 'ndif-heading';
  node.textContent = text;
  return node;
}

function emptyNote(text: string): HTMLElement {
  const node = document.createElement('li');
  node.className = 'ndif-empty';
  node.textContent = text;
  return node;
}
