// The host's own addresses, as the egress proxy and the DNS forwarder must know them: the proxy
// connects from the host, so a connection to one of them reaches the host's own services, which
// the kernel's rules protect only for packets that come from a sandbox's bridge.
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';

/** One spelling per address (IPv4-mapped IPv6 as IPv4, IPv6 compressed); undefined when unparsable. */
export function canonicalAddress(address: string): string | undefined {
  try {
    return ipaddr.process(address).toString();
  } catch {
    return undefined;
  }
}

/**
 * Addresses that reach the host's loopback from the host itself: 127/8 and ::1, and the
 * unspecified addresses (a connect to 0.0.0.0 or :: goes to loopback).
 */
export function isLoopbackish(address: string): boolean {
  let a: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    a = ipaddr.process(address);
  } catch {
    return false;
  }
  const range = a.range();
  return range === 'loopback' || range === 'unspecified' || (a.kind() === 'ipv4' && (a as ipaddr.IPv4).octets[0] === 0);
}

type Interfaces = () => ReturnType<typeof networkInterfaces>;

export class HostAddresses {
  readonly #read: Interfaces;
  readonly #maxAgeMs: number;
  readonly #missAgeMs: number;
  #known = new Set<string>();
  /** The subnets of every sbx bridge on the host (`sbx-*`), whichever SBX_HOME made it. */
  #bridges: Array<[ipaddr.IPv4 | ipaddr.IPv6, number]> = [];
  #at = -Infinity;

  /**
   * `maxAgeMs`: re-read the interfaces at least this often; `missAgeMs`: on a miss, re-read when
   * the list is older than this (an address added a moment ago is found at once).
   */
  constructor(options: { read?: Interfaces; maxAgeMs?: number; missAgeMs?: number } = {}) {
    this.#read = options.read ?? networkInterfaces;
    this.#maxAgeMs = options.maxAgeMs ?? 5000;
    this.#missAgeMs = options.missAgeMs ?? 250;
  }

  #refresh(): void {
    const known = new Set<string>();
    const bridges: Array<[ipaddr.IPv4 | ipaddr.IPv6, number]> = [];
    for (const [name, list] of Object.entries(this.#read())) {
      for (const i of list ?? []) {
        const a = canonicalAddress(i.address.replace(/%.*$/, ''));
        if (a) known.add(a);
        if (name.startsWith('sbx-') && i.cidr && !i.address.includes('%')) {
          try {
            bridges.push(ipaddr.parseCIDR(i.cidr));
          } catch {}
        }
      }
    }
    this.#known = known;
    this.#bridges = bridges;
    this.#at = performance.now();
  }

  /**
   * Whether `address` is on an sbx bridge of this host: a sandbox of any SBX_HOME (another home's
   * sandboxes are not in this gateway's list, but are sandboxes all the same).
   */
  onSandboxBridge(address: string): boolean {
    let a: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      a = ipaddr.process(address);
    } catch {
      return false;
    }
    if (performance.now() - this.#at > this.#missAgeMs) this.#refresh();
    return this.#bridges.some(([net, bits]) => net.kind() === a.kind() && a.match(net, bits));
  }

  /** Whether a connection from the host to `address` would reach the host itself. */
  has(address: string): boolean {
    const a = canonicalAddress(address);
    if (a === undefined) return false;
    if (isLoopbackish(a)) return true;
    const age = performance.now() - this.#at;
    if (age > this.#maxAgeMs) this.#refresh();
    if (this.#known.has(a)) return true;
    if (performance.now() - this.#at > this.#missAgeMs) {
      this.#refresh();
      return this.#known.has(a);
    }
    return false;
  }
}
