// The NDIF sidebar: the served models with their module trees, and the jobs, refreshed while it is visible.

import { Widget } from '@lumino/widgets';

import { IJob, MissingExtensionError, NDIFClient } from './api';
import { renderJob } from './jobs';
import { renderModuleTree } from './tree';

const REFRESH_MS = 2000;

export class NDIFPanel extends Widget {
  private readonly modelsNode = document.createElement('div');
  private readonly jobsNode = document.createElement('ul');
  private readonly messageNode = document.createElement('div');
  private timer: number | undefined;

  constructor(
    private readonly client: NDIFClient,
    private readonly onPick: (dotted: string) => void
  ) {
    super();
    this.id = 'ndif-panel';
    this.addClass('ndif-panel');
    this.title.caption = 'NDIF: models, module trees and jobs';
    this.messageNode.className = 'ndif-message';
    this.modelsNode.className = 'ndif-models';
    this.jobsNode.className = 'ndif-jobs';
    this.node.append(heading('Models'), this.messageNode, this.modelsNode, heading('Jobs'), this.jobsNode);
  }

  protected onAfterShow(): void {
    void this.refreshModels();
    void this.refreshJobs();
    this.timer = window.setInterval(() => void this.refreshJobs(), REFRESH_MS);
  }

  protected onBeforeHide(): void {
    window.clearInterval(this.timer);
  }

  dispose(): void {
    window.clearInterval(this.timer);
    super.dispose();
  }

  async refreshModels(): Promise<void> {
    try {
      const { backend, models } = await this.client.models();
      this.messageNode.textContent = models.length ? `Backend: ${backend}` : 'The server serves no models.';
      this.modelsNode.replaceChildren(
        ...models.map(model => {
          const section = document.createElement('details');
          section.className = 'ndif-model';
          section.dataset.model = model.name;
          section.open = models.length === 1;
          const summary = document.createElement('summary');
          summary.textContent = `${model.name} (${model.class}${model.loaded ? ', loaded' : ''})`;
          section.append(summary, renderModuleTree(model.modules, this.onPick));
          return section;
        })
      );
    } catch (error) {
      this.showProblem(error);
    }
  }

  async refreshJobs(): Promise<void> {
    let jobs: IJob[];
    try {
      jobs = await this.client.jobs();
    } catch (error) {
      this.showProblem(error);
      return;
    }
    const newestFirst = [...jobs].reverse();
    this.jobsNode.replaceChildren(
      ...(newestFirst.length
        ? newestFirst.map(job => renderJob(job, this.client, () => void this.refreshJobs()))
        : [emptyNote('No jobs yet: run a cell with --server (or device_map="server").')])
    );
  }

  private showProblem(error: unknown): void {
    const missing = error instanceof MissingExtensionError;
    this.messageNode.textContent = missing ? error.message : `The server extension answered: ${String(error)}`;
    this.messageNode.classList.toggle('ndif-missing', missing);
    if (missing) {
      this.modelsNode.replaceChildren();
      this.jobsNode.replaceChildren();
    }
  }
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
