// The gateway's view of the store, so a restart loses nothing. It is read once at start, then
// again when marked stale: by sbx itself after every change that affects routing (reload on the
// control socket awaits refresh(), so `sbx port rm` stops routing before it returns), by a watch
// on the file for other writers, and once a second as a safety net. The request path only looks
// at what was read: no file system call on it. A read is the store's snapshot, which the gateway's
// other readers share: a file already parsed costs the few bytes that name its generation.
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { SandboxRecord } from '../core/sandbox.ts';
import { StoreMark, type Store, type StoreSnapshot } from '../store/store.ts';

/** The once-a-second safety net reads the store at least this often even when it looks unchanged. */
const REREAD_MS = 10_000;

export class RouteTable {
  readonly #store: Pick<Store, 'path' | 'snapshot' | 'signature'>;
  #byRef = new Map<string, SandboxRecord>();
  /** `port expose --domain` names: the sandbox and port each routes to. */
  #byDomain = new Map<string, { record: SandboxRecord; port: number }>();
  #all: readonly SandboxRecord[] = [];
  readonly #watcher?: FSWatcher;
  readonly #timer: NodeJS.Timeout;
  readonly #read = new StoreMark(REREAD_MS);
  /** The snapshot in use: a read that finds the same one keeps the maps made of it. */
  #snapshot?: StoreSnapshot;

  constructor(store: Pick<Store, 'path' | 'snapshot' | 'signature'>) {
    this.#store = store;
    this.#sync();
    const file = basename(store.path);
    try {
      this.#watcher = watch(dirname(store.path), (_event, name) => {
        if (name === file) void this.refresh().catch(() => {});
      });
    } catch {}
    // The safety net skips a file it has read (a thousand records take milliseconds to parse),
    // but for a read every REREAD_MS whatever the file looks like.
    this.#timer = setInterval(() => {
      if (this.#read.due(this.#store.signature())) void this.refresh().catch(() => {});
    }, 1000);
    this.#timer.unref();
  }

  /** Re-read soon (in the background). */
  invalidate(): void {
    void this.refresh().catch(() => {});
  }

  /** Re-reads the store; resolves once what it holds now is in force. */
  refresh(): Promise<void> {
    try {
      this.#sync();
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  #sync(): void {
    const signature = this.#store.signature();
    const snapshot = this.#store.snapshot();
    if (snapshot !== this.#snapshot) this.#use(snapshot.sandboxes);
    this.#snapshot = snapshot;
    this.#read.seen(signature);
  }

  close(): void {
    this.#watcher?.close();
    clearInterval(this.#timer);
  }

  #use(records: readonly SandboxRecord[]): void {
    const all = records.filter((r) => !r.creating);
    const byRef = new Map<string, SandboxRecord>();
    const byDomain = new Map<string, { record: SandboxRecord; port: number }>();
    for (const r of all) {
      byRef.set(r.id, r);
      byRef.set(r.name, r);
      // The first holder wins (sbx lets one port hold a name); nginx's map asks here too (fastpath.ts).
      for (const p of r.ports ?? []) if (p.domain && !byDomain.has(p.domain)) byDomain.set(p.domain, { record: r, port: p.port });
    }
    this.#all = all;
    this.#byRef = byRef;
    this.#byDomain = byDomain;
  }

  /** The sandbox port a name of the user's own routes to (lower-case host, no port). */
  findDomain(host: string): { record: SandboxRecord; port: number } | undefined {
    return this.#byDomain.get(host);
  }

  /** Every name of the user's own that routes somewhere (`port expose --domain`). */
  customDomains(): string[] {
    return [...this.#byDomain.keys()];
  }

  /** A sandbox by exact name or id. */
  find(ref: string): SandboxRecord | undefined {
    return this.#byRef.get(ref);
  }

  /** find(), and on a miss one synchronous read (for egress decisions about a sandbox just made; not HTTP requests). */
  findOrRead(ref: string): SandboxRecord | undefined {
    const hit = this.#byRef.get(ref);
    if (hit) return hit;
    this.#sync();
    return this.#byRef.get(ref);
  }

  all(): readonly SandboxRecord[] {
    return this.#all;
  }
}
