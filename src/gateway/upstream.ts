// sbx's own view of DNS: the upstream resolver (SBX_DNS_UPSTREAM or the host's). The egress proxy
// connects only to addresses that a name resolves to here, whatever the sandbox believes.
import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { DnsUpstream } from './settings.ts';

const MAX_CACHE_SECONDS = 60;

export class UpstreamResolver {
  readonly #resolver = new Resolver({ timeout: 2000, tries: 2 });
  readonly #cache = new Map<string, { addresses: string[]; until: number }>();

  constructor(upstream: DnsUpstream) {
    const host = isIP(upstream.host) === 6 ? `[${upstream.host}]` : upstream.host;
    this.#resolver.setServers([`${host}:${upstream.port}`]);
  }

  /** IPv4 addresses first, then IPv6; empty when the name does not resolve. */
  async addresses(name: string): Promise<string[]> {
    // Only host names are asked for: c-ares stops at a NUL byte and would ask for another name.
    if (!/^[a-z0-9_.-]{1,253}$/i.test(name)) return [];
    const hit = this.#cache.get(name);
    if (hit && hit.until > Date.now()) return hit.addresses;
    const [v4, v6] = await Promise.all([
      this.#resolver.resolve4(name, { ttl: true }).catch(() => []),
      this.#resolver.resolve6(name, { ttl: true }).catch(() => []),
    ]);
    const all = [...v4, ...v6];
    const ttl = Math.min(MAX_CACHE_SECONDS, ...all.map((r) => r.ttl));
    const addresses = all.map((r) => r.address);
    if (addresses.length) this.#cache.set(name, { addresses, until: Date.now() + ttl * 1000 });
    return addresses;
  }
}
