// The sidebar: each model's queue next to its name, who is signed in, owners only in a list of several users' jobs, the
// jobs in a section of their own, a job's notebook opened from it; all of it absent, and nothing broken, with a server
// that does not send these fields.

// @vitest-environment jsdom

import { describe, expect, it, vi } from 'vitest';

// jsdom has no DragEvent, which @lumino/dragdrop (under @lumino/widgets) subclasses when it loads.
vi.hoisted(() => {
  const scope = globalThis as { DragEvent?: unknown };
  scope.DragEvent ??= class DragEvent extends MouseEvent {};
});

import { IJob, IModelsAnswer, IServedModel, MissingExtensionError, NDIFClient } from '../src/api';
import { modelLoadText, NDIFPanel, userText } from '../src/panel';
import { sampleJob } from './sample_job';

function model(overrides: Partial<IServedModel>): IServedModel {
  return {
    name: 'tiny',
    class: 'LlamaForCausalLM',
    parameters: 1000,
    loaded: false,
    modules: { name: '', class: 'LlamaForCausalLM', parameters: 1000, children: [] },
    ...overrides
  };
}

function job(id: string, overrides: Partial<IJob>): IJob {
  return sampleJob({ id, queued_seconds: null, run_seconds: null, result_bytes: 0, ...overrides });
}

function panelWith(models: () => IModelsAnswer, jobs: () => IJob[]): NDIFPanel {
  const client = {
    models: vi.fn(async () => models()),
    jobs: vi.fn(async () => jobs()),
    cancel: vi.fn()
  } as unknown as NDIFClient;
  return new NDIFPanel(client, () => undefined);
}

function texts(panel: NDIFPanel, selector: string): string[] {
  return [...panel.node.querySelectorAll(selector)].map(node => node.textContent ?? '');
}

describe('modelLoadText', () => {
  it('counts running and queued jobs, leaving out zeros and missing fields', () => {
    expect(modelLoadText({ running: 2, queued: 5 })).toBe('2 running · 5 queued');
    expect(modelLoadText({ running: 1, queued: 0 })).toBe('1 running');
    expect(modelLoadText({ running: 0, queued: 3 })).toBe('3 queued');
    expect(modelLoadText({ running: 0, queued: 0 })).toBe('');
    expect(modelLoadText({})).toBe('');
  });
});

describe('userText', () => {
  it('names the user, and says that an admin sees every user’s jobs', () => {
    expect(userText({ name: 'alice', admin: false })).toBe('signed in as alice');
    expect(userText({ name: 'root', admin: true })).toBe("signed in as root (admin: all users' jobs)");
    expect(userText(undefined)).toBe('');
    expect(userText({ name: '', admin: false })).toBe('');
  });
});

describe('NDIFPanel', () => {
  it("shows a model's queue next to its name and updates it in place, keeping the tree", async () => {
    let answer: IModelsAnswer = {
      backend: 'local',
      models: [model({ name: 'a', running: 1, queued: 2 }), model({ name: 'b', running: 0, queued: 0 })],
      user: { name: 'alice', admin: false }
    };
    const panel = panelWith(
      () => answer,
      () => []
    );
    await panel.refreshModels();
    expect(texts(panel, '.ndif-model > summary')).toEqual([
      'a (LlamaForCausalLM)1 running · 2 queued',
      'b (LlamaForCausalLM)'
    ]);
    expect(texts(panel, '.ndif-model-load')).toEqual(['1 running · 2 queued']);
    expect(texts(panel, '.ndif-user')).toEqual(['signed in as alice']);
    expect(texts(panel, '.ndif-message')).toEqual(['Backend: local']);

    const section = panel.node.querySelector('.ndif-model[data-model="a"]') as HTMLDetailsElement;
    section.open = true;
    answer = { ...answer, models: [model({ name: 'a', loaded: true }), model({ name: 'b', queued: 7 })] };
    await panel.refreshModels();
    expect(panel.node.querySelector('.ndif-model[data-model="a"]')).toBe(section);
    expect(section.open).toBe(true);
    expect(texts(panel, '.ndif-model > summary')).toEqual([
      'a (LlamaForCausalLM, loaded)',
      'b (LlamaForCausalLM)7 queued'
    ]);
  });

  it('says when the user is an admin and labels the owners of several users’ jobs', async () => {
    const panel = panelWith(
      () => ({ backend: 'local', models: [model({})], user: { name: 'root', admin: true } }),
      () => [
        job('j1', { owner: 'alice' }),
        job('j2', { owner: 'bob', status: 'queued', queue_position: 1 }),
        job('j3', { owner: 'alice', status: 'queued', queue_position: 2 })
      ]
    );
    await panel.refreshModels();
    await panel.refreshJobs();
    expect(texts(panel, '.ndif-user')).toEqual(["signed in as root (admin: all users' jobs)"]);
    expect(texts(panel, '.ndif-job-owner')).toEqual(['alice', 'bob', 'alice']);
    expect(texts(panel, '.ndif-job-status')).toEqual(['queued · 2nd in line', 'queued · next in line', 'done']);
  });

  it('works with a server that sends none of the new fields', async () => {
    const old = model({ loaded: true });
    delete old.queued;
    delete old.running;
    const panel = panelWith(
      () => ({ backend: 'local', models: [old] }),
      () => [job('j1', { status: 'queued' }), job('j2', {})]
    );
    await panel.refreshModels();
    await panel.refreshJobs();
    expect(texts(panel, '.ndif-model > summary')).toEqual(['tiny (LlamaForCausalLM, loaded)']);
    expect(panel.node.querySelector('.ndif-model-load')).toBeNull();
    expect(texts(panel, '.ndif-user')).toEqual(['']);
    expect(panel.node.querySelector('.ndif-job-owner')).toBeNull();
    expect(texts(panel, '.ndif-job-status')).toEqual(['done', 'queued']);
  });

  it("keeps a jobs request's problem on show while the models keep refreshing", async () => {
    const client = {
      models: vi.fn(async () => ({ backend: 'local', models: [model({})] })),
      jobs: vi.fn(async () => {
        throw new Error('503 the job store is unavailable');
      })
    } as unknown as NDIFClient;
    const panel = new NDIFPanel(client, () => undefined);
    await panel.refreshJobs();
    await panel.refreshModels();
    expect(texts(panel, '.ndif-message')).toEqual([
      'The server extension answered: Error: 503 the job store is unavailable'
    ]);
    expect(texts(panel, '.ndif-model > summary')).toEqual(['tiny (LlamaForCausalLM)']);
  });

  it('lists the jobs in a section of their own below the models', async () => {
    const panel = panelWith(
      () => ({ backend: 'local', models: [model({})] }),
      () => [job('j1', {})]
    );
    await panel.refreshModels();
    await panel.refreshJobs();
    const sections = [...panel.node.children].map(node => node.className);
    expect(sections).toEqual(['ndif-section ndif-models-section', 'ndif-section ndif-jobs-section']);
    expect(panel.node.querySelector('.ndif-models-section .ndif-model')).not.toBeNull();
    expect(panel.node.querySelector('.ndif-jobs-section .ndif-job')).not.toBeNull();
  });

  it("opens a job's notebook, keeps saying why it could not until it can, and leaves an unchanged list", async () => {
    const origin = { notebook: '/home/alice/gone.ipynb', cell: 'c-1' };
    const openOrigin = vi
      .fn()
      .mockRejectedValueOnce(new Error('gone.ipynb no longer exists'))
      .mockResolvedValue(undefined);
    const client = {
      models: vi.fn(async () => ({ backend: 'local', models: [] })),
      jobs: vi.fn(async () => [job('j1', { origin }), job('j2', {})]),
      cancel: vi.fn()
    } as unknown as NDIFClient;
    const panel = new NDIFPanel(client, () => undefined, openOrigin);
    await panel.refreshJobs();
    const listed = panel.node.querySelector('[data-job="j1"]');
    await panel.refreshJobs();
    expect(panel.node.querySelector('[data-job="j1"]')).toBe(listed);
    (panel.node.querySelector('[data-job="j1"] .ndif-job-notebook') as HTMLButtonElement).click();
    await vi.waitFor(() => expect(texts(panel, '.ndif-job-origin-problem')).toEqual(['gone.ipynb no longer exists']));
    expect(openOrigin).toHaveBeenCalledWith(origin);
    await panel.refreshJobs();
    expect(texts(panel, '[data-job="j1"] .ndif-job-origin-problem')).toEqual(['gone.ipynb no longer exists']);
    expect(panel.node.querySelector('[data-job="j2"] .ndif-job-notebook')).toBeNull();

    (panel.node.querySelector('[data-job="j1"] .ndif-job-notebook') as HTMLButtonElement).click();
    await vi.waitFor(() => expect(openOrigin).toHaveBeenCalledTimes(2));
    await vi.waitFor(() => expect(panel.node.querySelector('.ndif-job-origin-problem')).toBeNull());
  });

  it('says so and clears the lists when the server extension is missing', async () => {
    const panel = panelWith(
      () => {
        throw new MissingExtensionError('The ndif server extension is not running in this Jupyter server.');
      },
      () => []
    );
    await panel.refreshModels();
    expect(texts(panel, '.ndif-message')).toEqual(['The ndif server extension is not running in this Jupyter server.']);
    expect(panel.node.querySelector('.ndif-message')?.classList.contains('ndif-missing')).toBe(true);
    expect(panel.node.querySelectorAll('.ndif-model')).toHaveLength(0);
  });
});
