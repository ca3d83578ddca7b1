// The gateway's view of the store, so a restart loses nothing. It is re-read when marked stale:
// by sbx itself after every change that affects routing (reload on the control socket, awaited, so
// `sbx port rm` stops routing before it returns), by a watch on the file for other writers, and
// once a second as a safety net. No file system call on the request path.
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { SandboxRecord } from '../core/sandbox.ts';
import type { Store } from '../store/store.ts';

export class RouteTable {
  readonly #store: Store;
  #stale = true;
  #byRef = new Map<string, SandboxRecord>();
  #all: SandboxRecord[] = [];
  readonly #watcher?: FSWatcher;
  readonly #timer: NodeJS.Timeout;

  constructor(store: Store) {
    this.#store = store;
    const file = basename(store.path);
    try {
      this.#watcher = watch(dirname(store.path), (_event, name) => {
        if (name === file) this.#stale = true;
      });
    } catch {}
    this.#timer = setInterval(() => (this.#stale = true), 1000);
    this.#timer.unref();
  }

  invalidate(): void {
    this.#stale = true;
  }

  close(): void {
    this.#watcher?.close();
    clearInterval(this.#timer);
  }

  #refresh(): void {
    if (!this.#stale) return;
    this.#stale = false;
    this.#all = this.#store.sandboxes().filter((r) => !r.creating);
    this.#byRef = new Map();
    for (const r of this.#all) {
      this.#byRef.set(r.id, r);
      this.#byRef.set(r.name, r);
    }
  }

  /** A sandbox by exact name or id. */
  find(ref: string): SandboxRecord | undefined {
    this.#refresh();
    return this.#byRef.get(ref);
  }

  all(): SandboxRecord[] {
    this.#refresh();
    return this.#all;
  }
}
