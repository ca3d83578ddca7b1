// The config store: desired state of every sandbox, in one JSON file under SBX_HOME written
// atomically (atomically: a temporary file, fsync, rename; mode 0600), changed only under a
// cross-process lock (proper-lockfile) so concurrent sbx processes never lose each other's
// updates. Reads are a plain parse of that file, and the writer and the lock are loaded only to
// write: `sbx ls` starts faster that way.
//
// Every write puts a new random generation at the head of the file. A process that parsed the
// file knows from its first bytes, exactly, whether that parse is still the file: the gateway,
// which reads the store several times per command, parses a thousand records once per write of
// another process, and never its own (snapshot()). An update copies only the records its change
// reads, and writes the others' JSON text as it was (thawed.ts): a command that changes one
// sandbox of a thousand neither parses nor stringifies the other 999.
import { closeSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { byCreation, type SandboxRecord } from '../core/sandbox.ts';
import type { PoolData } from '../core/pool.ts';
import type { RestingSubnets } from '../core/subnet-pool.ts';
import { RuntimeError } from '../core/errors.ts';
import { describeHome, homeError, prepareHome } from './home.ts';
import { deepFreeze } from './records.ts';
import { ThawedRecords } from './thawed.ts';

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

/** The head of the file that holds its generation (`{"generation":"<16 hex>",...`). */
const HEAD_BYTES = 48;
const GENERATION = /^\{"generation":"([0-9a-f]{16})"/;

/** The store as one parse of it, shared by every reader in the process: frozen, not to be changed. */
export interface StoreSnapshot {
  readonly data: StoreData;
  /** Its sandboxes, oldest first (byCreation). */
  readonly sandboxes: readonly SandboxRecord[];
}

/** What was read or written last: the text of one generation, and its snapshot once one was asked for. */
interface Known {
  key: string;
  text: string;
  snapshot?: StoreSnapshot;
}

/** A parse (normalised) frozen all the way down, with its sandboxes oldest first. */
function frozenSnapshot(data: StoreData): StoreSnapshot {
  deepFreeze(data);
  return Object.freeze({ data, sandboxes: Object.freeze(byCreation(Object.values(data.sandboxes))) });
}

/** A copy of one's own of all but the sandboxes (the pool, resting subnets: small), normalised. */
function copyAllButSandboxes(data: StoreData): StoreData {
  return normalise(JSON.parse(JSON.stringify({ ...data, sandboxes: {} })) as Partial<StoreData>);
}

/**
 * A fresh parse of the file as the store's types have it: unknown keys (the generation among them)
 * dropped. Nothing is copied: a parse is no one else's (and copying 1,000 keys costs ~2 ms).
 */
function normalise(data: Partial<StoreData>): StoreData {
  const pool = data.pool && { size: data.pool.size ?? 0, entries: data.pool.entries ?? {}, ...(data.pool.error ? { error: data.pool.error } : {}) };
  return { version: 1, sandboxes: data.sandboxes ?? {}, ...(pool ? { pool } : {}), ...(data.resting ? { resting: data.resting } : {}) };
}

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
  #write?: (text: string) => void;
  /** The last generation this process read or wrote (a file without one is never kept). */
  #known?: Known;
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

  async #writer(): Promise<(text: string) => void> {
    if (!this.#write) {
      const { writeFileSync } = await import('atomically');
      this.#write = (text) => writeFileSync(this.path, text, { mode: 0o600 });
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
   * Changes whenever the file is written: its key (the generation, inode, size and modification
   * time), or for a file written before generations (or by hand) its inode, size and times. Lets a
   * poller skip a file it has seen; only the second kind may miss a change (same clock tick, size
   * and inode number), so pollers re-read now and then.
   */
  signature(): string {
    let fd: number;
    try {
      fd = openSync(this.path, 'r');
    } catch {
      return 'absent';
    }
    try {
      const generation = this.#generationOf(fd);
      if (generation) return this.#keyOf(fd, generation);
      const st = fstatSync(fd, { bigint: true });
      return `${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
    } catch {
      return 'absent';
    } finally {
      closeSync(fd);
    }
  }

  /** The store as it is on disk now, to change: every call gets a copy of its own. */
  read(): StoreData {
    const loaded = this.#load();
    if (!loaded) return { ...EMPTY, sandboxes: {} };
    const data = normalise(this.#parse(loaded.text));
    if (loaded.key && loaded !== this.#known) this.#known = { key: loaded.key, text: loaded.text };
    return data;
  }

  /**
   * The store as it is on disk now, to look at: one frozen parse per file, shared by every caller
   * in this process (the gateway reads the store several times per command).
   */
  snapshot(): StoreSnapshot {
    const loaded = this.#load();
    if (loaded && loaded === this.#known && this.#known.snapshot) return this.#known.snapshot;
    const snapshot = frozenSnapshot(loaded ? normalise(this.#parse(loaded.text)) : { ...EMPTY, sandboxes: {} });
    // Kept once it parsed: a file that did not is read again next time (it may be repaired).
    if (loaded?.key) this.#known = { key: loaded.key, text: loaded.text, snapshot };
    return snapshot;
  }

  /** The warm pool as it is on disk now (size 0 and no entries when never set); frozen. */
  pool(): PoolData {
    return this.snapshot().data.pool ?? { size: 0, entries: {} };
  }

  /** Every sandbox, oldest first; frozen (read() is the copy to change). */
  sandboxes(): readonly SandboxRecord[] {
    return this.snapshot().sandboxes;
  }

  /** The generation at the head of an open store file, from its first bytes only. */
  #generationOf(fd: number): string | undefined {
    const head = Buffer.alloc(HEAD_BYTES);
    const n = readSync(fd, head, 0, HEAD_BYTES, 0);
    return GENERATION.exec(head.toString('latin1', 0, n))?.[1];
  }

  /**
   * What tells one file from another: its generation, and the inode, size and modification time
   * of the open file (an edit by hand that keeps the first line still changes one of them).
   */
  #keyOf(fd: number, generation: string): string {
    const st = fstatSync(fd, { bigint: true });
    return `${generation}:${st.ino}:${st.size}:${st.mtimeNs}`;
  }

  /**
   * The file's text and key (undefined when there is no file): the one in hand when the key is
   * the same, else read from the same open file, so that the text is the one the key belongs to.
   * A file without a generation has no key and is never kept.
   */
  #load(): { key?: string; text: string } | undefined {
    let fd: number;
    try {
      fd = openSync(this.path, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw this.#unreadable(err);
    }
    try {
      const generation = this.#generationOf(fd);
      const key = generation && this.#keyOf(fd, generation);
      if (key && key === this.#known?.key) return this.#known;
      return { ...(key ? { key } : {}), text: readFileSync(fd, 'utf8') };
    } catch (err) {
      throw this.#unreadable(err);
    } finally {
      closeSync(fd);
    }
  }

  /** What this process just wrote, to keep in hand (under the lock, no other sbx process writes). */
  #writtenKey(generation: string, snapshot: StoreSnapshot, text: string): Known | undefined {
    try {
      const fd = openSync(this.path, 'r');
      try {
        return this.#generationOf(fd) === generation ? { key: this.#keyOf(fd, generation), text, snapshot } : undefined;
      } finally {
        closeSync(fd);
      }
    } catch {
      return undefined;
    }
  }

  #parse(text: string): Partial<StoreData> {
    try {
      return JSON.parse(text) as Partial<StoreData>;
    } catch (err) {
      throw this.#unreadable(err);
    }
  }

  #unreadable(err: unknown): RuntimeError {
    return new RuntimeError(`the sbx store ${this.path} cannot be read: ${(err as Error).message}`, { cause: err });
  }

  /**
   * Read-modify-write under the lock. `change` changes `data` in place (a copy of its own: a
   * record is copied when the change reads it) and may look things up in `view`, the same store
   * frozen (no copy); what it returns is handed back to the caller.
   */
  async update<T>(change: (data: StoreData, view: StoreSnapshot) => T | Promise<T>): Promise<T> {
    const write = await this.#writer().catch((err: unknown) => {
      throw homeError(this.home, err, 'write the sbx store') ?? err;
    });
    const release = await this.#lock();
    try {
      const view = this.snapshot();
      const thawed = new ThawedRecords(view.data.sandboxes);
      const data: StoreData = { ...copyAllButSandboxes(view.data), sandboxes: thawed.map };
      const result = await change(data, view);
      const next = this.#serialise(data, thawed);
      try {
        write(next.text);
      } catch (err) {
        this.#known = undefined;
        throw homeError(this.home, err, `write the sbx store ${this.path}`) ?? err;
      }
      this.#known = this.#writtenKey(next.generation, next.snapshot, next.text);
      return result;
    } finally {
      await release();
    }
  }

  /**
   * The file's text for what a change left, with a new generation first (readers find it in the
   * file's first bytes), and the snapshot that a parse of that text would give. Compact: with
   * 1,000 sandboxes every write and every read of the file is a few ms shorter.
   */
  #serialise(data: StoreData, thawed: ThawedRecords): { generation: string; text: string; snapshot: StoreSnapshot } {
    // node:crypto here, not at the top: every command reads the store, few write it (and loading
    // it costs a command's start several ms).
    const { randomBytes } = process.getBuiltinModule('node:crypto') as typeof import('node:crypto');
    const generation = randomBytes(8).toString('hex');
    let sandboxes: { json: string; records: Record<string, SandboxRecord> };
    if (data.sandboxes === thawed.map) sandboxes = thawed.serialise();
    else {
      const json = JSON.stringify(data.sandboxes ?? {}); // the change put a map of its own
      sandboxes = { json, records: deepFreeze(JSON.parse(json) as Record<string, SandboxRecord>) };
    }
    // JSON.stringify writes everything but the sandboxes, whose text is put in place of a mark.
    const mark = `sbx-sandboxes-${generation}`;
    const text = JSON.stringify({ generation, ...data, sandboxes: mark }).replace(JSON.stringify(mark), () => sandboxes.json) + '\n';
    const snapshot = frozenSnapshot({ ...copyAllButSandboxes(data), sandboxes: sandboxes.records });
    return { generation, text, snapshot };
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
