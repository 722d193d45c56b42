// The server extension's REST API (`{base_url}ndif/api/`), as the sidebar uses it.

import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** One module of a served model's tree. */
export interface IModuleNode {
  name: string;
  class: string;
  parameters: number;
  children: IModuleNode[];
}

/** A model the server serves. */
export interface IServedModel {
  name: string;
  class: string;
  parameters: number;
  loaded: boolean;
  modules: IModuleNode;
  /** Jobs waiting for this model (newer servers). */
  queued?: number;
  /** Jobs running on this model (newer servers). */
  running?: number;
}

/** Who the server thinks sends the requests; an admin sees every user's jobs. */
export interface IUser {
  name: string;
  admin: boolean;
}

/** `GET models`: the backend, the served models, and (newer servers) who is asking. */
export interface IModelsAnswer {
  backend: string;
  models: IServedModel[];
  user?: IUser;
}

/** Where a job was sent from, as its kernel knew it (newer servers; display only). */
export interface IJobOrigin {
  /** The notebook's path: absolute, or relative to the Jupyter server's folder. */
  notebook?: string;
  /** The id of the cell that sent the job. */
  cell?: string;
}

/** A job, as `GET jobs` lists it. */
export interface IJob {
  id: string;
  model: string;
  kind: string;
  owner: string;
  status: 'queued' | 'running' | 'done' | 'error' | 'cancelled';
  phase: string | null;
  step: number | null;
  steps: number | null;
  created: number;
  started: number | null;
  finished: number | null;
  queued_seconds: number | null;
  run_seconds: number | null;
  result_bytes: number;
  /** A queued job's place in its model's queue, in the order the server takes jobs (1 = next); null otherwise. */
  queue_position?: number | null;
  /** How many jobs ran together in the job's batched forward pass (0 before it runs, 1 alone). */
  batch?: number;
  /** The first words of the job's first prompt (newer servers). */
  prompt?: string;
  /** The notebook and cell that sent the job, when its kernel said (newer servers). */
  origin?: IJobOrigin | null;
  error: { type: string; message: string; hint?: string | null } | null;
}

/** The server answered, but the extension is not there (404) or refused (401/403): said in plain words. */
export class MissingExtensionError extends Error {}

export class NDIFClient {
  constructor(private readonly settings: ServerConnection.ISettings = ServerConnection.makeSettings()) {}

  async models(): Promise<IModelsAnswer> {
    return this.request('models');
  }

  async jobs(): Promise<IJob[]> {
    const answer = await this.request<{ jobs: IJob[] }>('jobs');
    return answer.jobs;
  }

  async cancel(id: string): Promise<void> {
    await this.request(`jobs/${encodeURIComponent(id)}`, { method: 'DELETE' });
  }

  private async request<T>(path: string, init: RequestInit = {}): Promise<T> {
    const url = URLExt.join(this.settings.baseUrl, 'ndif', 'api', path);
    const response = await ServerConnection.makeRequest(url, init, this.settings);
    if (response.status === 404) {
      throw new MissingExtensionError(
        'The ndif server extension is not running in this Jupyter server. ' +
          "Install ndif-jupyter in the server's environment and restart it (`jupyter server extension list` shows it)."
      );
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).message ?? message;
      } catch {
        // an answer without JSON keeps the status line
      }
      throw new Error(message);
    }
    const text = await response.text();
    return (text ? JSON.parse(text) : {}) as T;
  }
}
