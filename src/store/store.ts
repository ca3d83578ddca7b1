// The config store: desired state of every sandbox, in one JSON file under SBX_HOME written
// atomically (atomically: a temporary file, fsync, rename; mode 0600), changed only under a
// cross-process lock (proper-lockfile) so concurrent sbx processes never lose each other's
// updates. Reads are a plain parse of that file, and the writer and the lock are loaded only to
// write: `sbx ls` starts faster that way.
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { byCreation, type SandboxRecord } from '../core/sandbox.ts';
import type { PoolData } from '../core/pool.ts';
import type { RestingSubnets } from '../core/subnet-pool.ts';
import { RuntimeError } from '../core/errors.ts';
import { describeHome, homeError, prepareHome } from './home.ts';

/**
 * How long a store update waits for the lock before it gives up. Updates hold it for
 * milliseconds; a lock left by a killed process is taken over once it is 10 s old (stale).
 */
export const STORE_LOCK_WAIT_MS = 30_000;

export interface StoreData {
  version: 1;
  sandboxes: Record<string, SandboxRecord>;
  /** The warm pool (core/pool.ts): its size and the pooled sandboxes, which are no one's yet. */
  pool?: PoolData;
  /** Subnets of removed sandboxes that no sandbox gets yet (core/subnet-pool.ts SUBNET_REST_MS). */
  resting?: RestingSubnets;
}

const EMPTY: StoreData = { version: 1, sandboxes: {} };

/**
 * What a poller last read of the store (its signature, and when): `due()` says whether to read it
 * again, because it changed or because `maxAgeMs` passed (signatures may miss a change: see
 * Store.signature). For pollers that only skip work; decisions read the store.
 */
export class StoreMark {
  #signature = '';
  #at = 0;
  readonly #maxAgeMs: number;
  constructor(maxAgeMs: number) {
    this.#maxAgeMs = maxAgeMs;
  }

  due(signature: string): boolean {
    return signature !== this.#signature || performance.now() - this.#at > this.#maxAgeMs;
  }

  seen(signature: string): void {
    [this.#signature, this.#at] = [signature, performance.now()];
  }

  clear(): void {
    this.#signature = '';
  }
}

export class Store {
  readonly home: string;
  #write?: (data: StoreData) => void;
  readonly path: string;
  readonly #lockPath: string;

  readonly #lockWaitMs: number;

  constructor(home: string, options: { lockWaitMs?: number } = {}) {
    this.home = home;
    this.#lockWaitMs = options.lockWaitMs ?? STORE_LOCK_WAIT_MS;
    prepareHome(home);
    this.path = join(home, 'state.json');
    this.#lockPath = join(home, 'state.lock');
  }

  async #writer(): Promise<(data: StoreData) => void> {
    if (!this.#write) {
      const { writeFileSync } = await import('atomically');
      // Compact: with 1,000 sandboxes every write and every read of the file is a few ms shorter.
      this.#write = (data) => writeFileSync(this.path, JSON.stringify(data) + '\n', { mode: 0o600 });
    }
    return this.#write;
  }

  /**
   * Loads what a write needs (the writer, the lock) ahead of time; commands call it while they wait
   * for the engine so that the write at the end does not wait for module loading.
   */
  warmUp(): void {
    setImmediate(() => {
      this.#writer().catch(() => {});
      import('proper-lockfile').catch(() => {});
    });
  }

  /**
   * Changes whenever the file is written (each write is a new file renamed into place): lets a
   * poller skip parsing a file it has seen. Not for decisions: it may miss a change within the
   * same clock tick to a file of the same size and inode number, so pollers re-read now and then.
   */
  signature(): string {
    try {
      const st = statSync(this.path, { bigint: true });
      return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    } catch {
      return 'absent';
    }
  }

  /** A snapshot of the store as it is on disk now. */
  read(): StoreData {
    let data: Partial<StoreData>;
    try {
      data = JSON.parse(readFileSync(this.path, 'utf8')) as Partial<StoreData>;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ...EMPTY, sandboxes: {} };
      throw new RuntimeError(`the sbx store ${this.path} cannot be read: ${(err as Error).message}`, { cause: err });
    }
    return { version: 1, sandboxes: { ...(data.sandboxes ?? {}) }, ...(data.pool ? { pool: { size: data.pool.size ?? 0, entries: { ...(data.pool.entries ?? {}) }, ...(data.pool.error ? { error: data.pool.error } : {}) } } : {}), ...(data.resting ? { resting: { ...data.resting } } : {}) };
  }

  /** The warm pool as it is on disk now (size 0 and no entries when never set). */
  pool(): PoolData {
    return this.read().pool ?? { size: 0, entries: {} };
  }

  sandboxes(): SandboxRecord[] {
    return byCreation(Object.values(this.read().sandboxes));
  }

  /**
   * Read-modify-write under the lock. `change` gets a fresh copy and returns what to write
   * (or mutates it in place); what it returns besides is handed back to the caller.
   */
  async update<T>(change: (data: StoreData) => T | Promise<T>): Promise<T> {
    const write = await this.#writer().catch((err: unknown) => {
      throw homeError(this.home, err, 'write the sbx store') ?? err;
    });
    const release = await this.#lock();
    try {
      const data = this.read();
      const result = await change(data);
      try {
        write(data);
      } catch (err) {
        throw homeError(this.home, err, `write the sbx store ${this.path}`) ?? err;
      }
      return result;
    } finally {
      await release();
    }
  }

  async #lock(): Promise<() => Promise<void>> {
    const { default: lockfile } = await import('proper-lockfile');
    const started = Date.now();
    for (;;) {
      try {
        return await lockfile.lock(this.home, {
          lockfilePath: this.#lockPath,
          realpath: false,
          stale: 10_000,
          retries: { retries: 20, minTimeout: 5, maxTimeout: 50, factor: 1.3 },
        });
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        if (e.code === 'ELOCKED' && Date.now() - started < this.#lockWaitMs) continue;
        if (e.code === 'ELOCKED') {
          throw new RuntimeError(
            `the sbx store of ${describeHome(this.home)} stayed locked by another sbx process for ${Math.round((Date.now() - started) / 1000)}s (lock ${this.#lockPath}): retry; a lock whose process died is taken over after 10s`,
            { cause: err },
          );
        }
        throw homeError(this.home, err, `lock the sbx store (${this.#lockPath})`) ?? new RuntimeError(`could not lock the sbx store at ${this.#lockPath}: ${e.message}`, { cause: err });
      }
    }
  }
}
