// Which sandbox a packet came from, by its source address: each sandbox has its own bridge network
// and subnet (IPv4, and IPv6 for sandboxes made with --ipv6), and cannot forge another's address
// (no NET_RAW, no NET_ADMIN). Subnets come from Docker, re-read when an unknown address shows up
// (at most twice a second). The same subnets tell the egress proxy and the DNS forwarder which
// destinations are sandboxes (never reachable through them).
import ipaddr from 'ipaddr.js';
import type { Runtime } from '../runtime/docker.ts';

/** How old the known subnets may be when judging a destination (sandboxes come and go). */
const DESTINATION_MAX_AGE_MS = 5000;

type Subnet = { id: string; net: [ipaddr.IPv4 | ipaddr.IPv6, number] };

export class SandboxSources {
  readonly #runtime: Pick<Runtime, 'listSandboxNetworks'>;
  readonly #home: string;
  #subnets: Subnet[] = [];
  #loadedAt = 0;
  #invalidated = true;
  /** Bumped by invalidate(): a load that began before it does not count as fresh. */
  #generation = 0;
  /** When a load last failed: a flood of lookups does not make each ask the engine again. */
  #failedAt = 0;
  #loading?: Promise<void>;

  constructor(runtime: Pick<Runtime, 'listSandboxNetworks'>, home: string) {
    this.#runtime = runtime;
    this.#home = home;
  }

  /** Forget what is known (a sandbox came or went). */
  invalidate(): void {
    this.#loadedAt = 0;
    this.#invalidated = true;
    this.#generation++;
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
    const generation = this.#generation;
    let nets: Awaited<ReturnType<Runtime['listSandboxNetworks']>>;
    try {
      nets = await this.#runtime.listSandboxNetworks(this.#home);
    } catch (err) {
      this.#failedAt = Date.now();
      throw err;
    }
    const subnets: Subnet[] = [];
    for (const [id, n] of nets) {
      subnets.push({ id, net: ipaddr.parseCIDR(n.subnet) });
      if (n.subnet6) subnets.push({ id, net: ipaddr.parseCIDR(n.subnet6) });
    }
    this.#subnets = subnets;
    this.#loadedAt = Date.now();
    if (generation === this.#generation) this.#invalidated = false;
  }

  #reload(): Promise<void> {
    this.#loading ??= this.#load().finally(() => (this.#loading = undefined));
    return this.#loading.catch(() => {});
  }

  /**
   * The sandbox id that owns `address`, or undefined (then the caller answers nothing). After a
   * sandbox came or went the subnets are read again first: a removed sandbox's subnet may be the
   * next one's now, and must not be judged by the removed one's policy. Subnets that cannot be
   * read again (the engine does not answer) judge nothing: no sandbox.
   */
  async find(address: string): Promise<string | undefined> {
    if (this.#invalidated && Date.now() - this.#failedAt < 250) return undefined;
    for (let tries = 0; this.#invalidated && tries < 2; tries++) await this.#reload();
    if (this.#invalidated) return undefined;
    const hit = this.#match(address);
    if (hit) return hit;
    if (Date.now() - this.#loadedAt < 500) return undefined;
    await this.#reload();
    return this.#match(address);
  }

  /**
   * The sandbox whose subnet holds a destination address (the host's own address on a bridge is
   * in it too). Unlike find(), a miss is the normal case here: the subnets are re-read only when
   * a sandbox came or went, or every few seconds, not on every miss.
   */
  async owner(address: string): Promise<string | undefined> {
    if (this.#invalidated || Date.now() - this.#loadedAt > DESTINATION_MAX_AGE_MS) await this.#reload();
    return this.#match(address);
  }
}
