// The gateway's view of the store: reloaded whenever state.json changes (one stat per request),
// so `sbx port rm` stops routing as soon as its write lands, and a restart loses nothing.
import { statSync } from 'node:fs';
import type { SandboxRecord } from '../core/sandbox.ts';
import type { Store } from '../store/store.ts';

export class RouteTable {
  readonly #store: Store;
  #stamp = '';
  #byRef = new Map<string, SandboxRecord>();
  #all: SandboxRecord[] = [];

  constructor(store: Store) {
    this.#store = store;
  }

  #refresh(): void {
    let stamp = 'none';
    try {
      const st = statSync(this.#store.path);
      stamp = `${st.ino}:${st.mtimeMs}:${st.size}`;
    } catch {}
    if (stamp === this.#stamp) return;
    this.#stamp = stamp;
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
