// A sandbox's network log: the egress decisions sbx made for it (new connections, not packets,
// and DNS queries), each with the rule that decided (network-policy.ts: decideConnection,
// decideName). Pure: the daemon keeps one bounded ring per sandbox (LogRing) and feeds it from the
// kernel (nflog), the DNS forwarder and the Host/SNI proxy.
export type NetworkVerdict = 'allowed' | 'blocked';
/** Who decided: the kernel's rules, sbx's DNS forwarder, or its Host/SNI proxy. */
export type NetworkLogSource = 'kernel' | 'dns' | 'proxy';

export interface NetworkLogEntry {
  /** ISO time of the decision. */
  time: string;
  /** The sandbox's name (filled in by the daemon when it answers). */
  sandbox?: string;
  source: NetworkLogSource;
  /** tcp, udp, icmp, icmpv6 (a protocol number otherwise), or dns for a query. */
  protocol: string;
  /** The destination address (a DNS entry: none; its answers are in `answers`). */
  address?: string;
  port?: number;
  /** The name, when one is known: the query, the Host or SNI, or a DNS answer that gave the address. */
  name?: string;
  verdict: NetworkVerdict;
  /** The entry, mode or default that decided: `allowOut *.example.com`, `mode block-all`, `default: host address`. */
  rule: string;
  /** DNS: the query type (A, AAAA...) and the addresses the answer gave. */
  type?: string;
  answers?: string[];
}

/** How many entries a sandbox's ring keeps: the oldest go first. */
export const LOG_CAPACITY = 10_000;

export interface LogFilter {
  /** Only entries at or after this time (ms since the epoch). */
  since?: number;
  blocked?: boolean;
}

/** Why a followed log ended: its sandbox was removed, or the gateway stopped. */
export type LogEnd = 'removed' | 'stopped';

/** What a client asks of the log: `since` in ms since the epoch. */
export type NetworkLogQuery = LogFilter;

export function matches(e: NetworkLogEntry, f: LogFilter): boolean {
  if (f.blocked && e.verdict !== 'blocked') return false;
  if (f.since !== undefined && Date.parse(e.time) < f.since) return false;
  return true;
}

/** A fixed-size ring of entries, oldest first: never more than `capacity` held. */
export class LogRing {
  readonly capacity: number;
  #items: NetworkLogEntry[] = [];
  #start = 0;

  constructor(capacity = LOG_CAPACITY) {
    this.capacity = capacity;
  }

  get size(): number {
    return this.#items.length;
  }

  /** Adds an entry; true when the ring grew (false: its oldest went). */
  push(e: NetworkLogEntry): boolean {
    if (this.#items.length < this.capacity) {
      this.#items.push(e);
      return true;
    }
    this.#items[this.#start] = e;
    this.#start = (this.#start + 1) % this.capacity;
    return false;
  }

  /** Drops the oldest `n` entries: how many went. */
  dropOldest(n: number): number {
    const kept = this.list().slice(n);
    const dropped = this.#items.length - kept.length;
    this.#items = kept;
    this.#start = 0;
    return dropped;
  }

  list(f: LogFilter = {}): NetworkLogEntry[] {
    const out: NetworkLogEntry[] = [];
    for (let i = 0; i < this.#items.length; i++) {
      const e = this.#items[(this.#start + i) % this.#items.length]!;
      if (matches(e, f)) out.push(e);
    }
    return out;
  }
}

/**
 * At most `rate` entries a second per key after a burst of `burst` (a token bucket): a flood in one
 * sandbox costs the others nothing, and what it drops is counted.
 */
export class RateGate {
  readonly #buckets = new Map<string, { tokens: number; at: number; dropped: number }>();
  readonly rate: number;
  readonly burst: number;
  constructor(rate = 100, burst = 500) {
    this.rate = rate;
    this.burst = burst;
  }

  take(key: string, now = Date.now()): boolean {
    let b = this.#buckets.get(key);
    if (!b) {
      if (this.#buckets.size > 10_000) this.#buckets.clear(); // keys of sandboxes long gone
      b = { tokens: this.burst, at: now, dropped: 0 };
      this.#buckets.set(key, b);
    }
    b.tokens = Math.min(this.burst, b.tokens + ((now - b.at) / 1000) * this.rate);
    b.at = now;
    if (b.tokens < 1) {
      b.dropped++;
      return false;
    }
    b.tokens -= 1;
    return true;
  }

  /** How many `take`s were refused for this key (and forgets the count). */
  dropped(key: string): number {
    const b = this.#buckets.get(key);
    const n = b?.dropped ?? 0;
    if (b) b.dropped = 0;
    return n;
  }
}
