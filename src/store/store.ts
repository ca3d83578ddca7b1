// The config store: desired state of every sandbox, in one JSON file under SBX_HOME (conf),
// changed only under a cross-process lock (proper-lockfile) so concurrent sbx processes never
// lose each other's updates.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Conf from 'conf';
import lockfile from 'proper-lockfile';
import type { SandboxRecord } from '../core/sandbox.ts';
import { RuntimeError } from '../core/errors.ts';

export interface StoreData {
  version: 1;
  sandboxes: Record<string, SandboxRecord>;
}

const EMPTY: StoreData = { version: 1, sandboxes: {} };

export class Store {
  readonly home: string;
  // Typed loosely: conf's dot-path typing does not fit a map of records; read() shapes it.
  readonly #conf: Conf<Record<string, unknown>>;
  readonly #lockPath: string;

  constructor(home: string) {
    this.home = home;
    mkdirSync(home, { recursive: true, mode: 0o700 });
    this.#conf = new Conf<Record<string, unknown>>({
      cwd: home,
      configName: 'state',
      projectName: 'sbx',
      defaults: { ...EMPTY },
      configFileMode: 0o600,
      accessPropertiesByDotNotation: false,
    });
    this.#lockPath = join(home, 'state.lock');
  }

  get path(): string {
    return this.#conf.path;
  }

  /** A snapshot of the store as it is on disk now. */
  read(): StoreData {
    const data = this.#conf.store as Partial<StoreData>;
    return { version: 1, sandboxes: { ...(data.sandboxes ?? {}) } };
  }

  sandboxes(): SandboxRecord[] {
    return Object.values(this.read().sandboxes).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  /**
   * Read-modify-write under the lock. `change` gets a fresh copy and returns what to write
   * (or mutates it in place); what it returns besides is handed back to the caller.
   */
  async update<T>(change: (data: StoreData) => T | Promise<T>): Promise<T> {
    const release = await this.#lock();
    try {
      const data = this.read();
      const result = await change(data);
      this.#conf.store = data as unknown as Record<string, unknown>;
      return result;
    } finally {
      await release();
    }
  }

  async #lock(): Promise<() => Promise<void>> {
    try {
      return await lockfile.lock(this.home, {
        lockfilePath: this.#lockPath,
        realpath: false,
        stale: 10_000,
        retries: { retries: 200, minTimeout: 5, maxTimeout: 50, factor: 1.3 },
      });
    } catch (err) {
      throw new RuntimeError(`could not lock the sbx store at ${this.#lockPath}: ${(err as Error).message}`, { cause: err });
    }
  }
}
