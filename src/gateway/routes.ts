// The gateway's view of the store, so a restart loses nothing. It is read once at start, then
// re-read in the background (asynchronously) when marked stale: by sbx itself after every change
// that affects routing (reload on the control socket awaits refresh(), so `sbx port rm` stops
// routing before it returns), by a watch on the file for other writers, and once a second as a
// safety net. The request path only looks at what was read: no file system call on it.
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { byCreation, type SandboxRecord } from '../core/sandbox.ts';
import { StoreMark, type Store } from '../store/store.ts';

/** The once-a-second safety net reads the store at least this often even when it looks unchanged. */
const REREAD_MS = 10_000;

export class RouteTable {
  readonly #store: Pick<Store, 'path' | 'sandboxes' | 'signature'>;
  #byRef = new Map<string, SandboxRecord>();
  /** `port expose --domain` names: the sandbox and port each routes to. */
  #byDomain = new Map<string, { record: SandboxRecord; port: number }>();
  #all: SandboxRecord[] = [];
  readonly #watcher?: FSWatcher;
  readonly #timer: NodeJS.Timeout;
  #reading?: Promise<void>;
  #again = false;
  readonly #read = new StoreMark(REREAD_MS);
  /** The text last parsed: a read that finds the same text skips the parse. */
  #text?: string;

  constructor(store: Pick<Store, 'path' | 'sandboxes' | 'signature'>) {
    this.#store = store;
    this.#use(store.sandboxes());
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

  /** Re-reads the store; resolves once what it holds now is in force (concurrent calls share a read, plus one). */
  refresh(): Promise<void> {
    if (this.#reading) {
      this.#again = true;
      return this.#reading.then(() => this.refresh());
    }
    this.#reading = (async () => {
      try {
        do {
          this.#again = false;
          let text: string;
          const signature = this.#store.signature();
          try {
            text = await readFile(this.#store.path, 'utf8');
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
            text = '{}';
          }
          // sbx's own writes are read twice (the watch, then the reload that waits for the
          // table): the second finds the same text, and a thousand records take ~5 ms to parse.
          if (text !== this.#text) {
            const data = JSON.parse(text) as { sandboxes?: Record<string, SandboxRecord> };
            this.#use(byCreation(Object.values(data.sandboxes ?? {})));
            this.#text = text;
          }
          this.#read.seen(signature);
        } while (this.#again);
      } finally {
        this.#reading = undefined;
      }
    })();
    return this.#reading;
  }

  close(): void {
    this.#watcher?.close();
    clearInterval(this.#timer);
  }

  #use(records: SandboxRecord[]): void {
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
    this.#use(this.#store.sandboxes());
    this.#text = undefined;
    return this.#byRef.get(ref);
  }

  all(): SandboxRecord[] {
    return this.#all;
  }
}
