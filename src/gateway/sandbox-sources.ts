// Which sandbox a packet came from, by its source address: each sandbox has its own bridge network
// and subnet, and cannot forge another's address (no NET_RAW, no NET_ADMIN). Subnets come from
// Docker, re-read when an unknown address shows up (at most twice a second).
import ipaddr from 'ipaddr.js';
import type { Runtime } from '../runtime/docker.ts';

export class SandboxSources {
  readonly #runtime: Runtime;
  readonly #home: string;
  #subnets: Array<{ id: string; net: [ipaddr.IPv4 | ipaddr.IPv6, number] }> = [];
  #loadedAt = 0;
  #loading?: Promise<void>;

  constructor(runtime: Runtime, home: string) {
    this.#runtime = runtime;
    this.#home = home;
  }

  /** Forget what is known (a sandbox came or went). */
  invalidate(): void {
    this.#loadedAt = 0;
  }

  #match(address: string): string | undefined {
    let addr: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      addr = ipaddr.process(address);
    } catch {
      return undefined;
    }
    return this.#subnets.find((s) => s.net[0].kind() === addr.kind() && addr.match(s.net as never))?.id;
  }

  async #load(): Promise<void> {
    const nets = await this.#runtime.listSandboxNetworks(this.#home);
    this.#subnets = [...nets].map(([id, n]) => ({ id, net: ipaddr.parseCIDR(n.subnet) }));
    this.#loadedAt = Date.now();
  }

  /** The sandbox id that owns `address`, or undefined (then the caller answers nothing). */
  async find(address: string): Promise<string | undefined> {
    const hit = this.#match(address);
    if (hit) return hit;
    if (Date.now() - this.#loadedAt < 500) return undefined;
    this.#loading ??= this.#load().finally(() => (this.#loading = undefined));
    await this.#loading.catch(() => {});
    return this.#match(address);
  }
}
