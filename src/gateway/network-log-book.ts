// The daemon's network log: one bounded ring per sandbox (core/network-log.ts), fed by the kernel
// (nflog, network-log-service.ts) and by the egress worker (its DNS forwarder and proxy), read by
// `sbx network log` and followed live. Rings live in memory only: they go with the sandbox, and a
// gateway that restarts starts them empty.
import { isIP } from 'node:net';
import { isPort } from './egress-ipc.ts';
import { LogRing, matches, type LogEnd, type LogFilter, type NetworkLogEntry } from '../core/network-log.ts';

interface Follower {
  id: string;
  filter: LogFilter;
  onEntry(e: NetworkLogEntry): void;
  onEnd(why: LogEnd): void;
}

/** How many address -> name pairs (from DNS answers) are kept per sandbox, and for how long. */
const NAMES_PER_SANDBOX = 1024;
/** How many entries all the rings hold together: past it, the fullest ring loses its oldest. */
export const LOG_TOTAL_CAPACITY = 200_000;
/** DNS answers kept per entry. */
export const ANSWERS_KEPT = 16;
const NAME_TTL_MS = 15 * 60_000;

export class NetworkLogBook {
  readonly #rings = new Map<string, LogRing>();
  readonly #names = new Map<string, Map<string, { name: string; until: number }>>();
  readonly #followers = new Set<Follower>();
  readonly #capacity: number | undefined;
  readonly #total: number;
  #size = 0;

  constructor(capacity?: number, total = LOG_TOTAL_CAPACITY) {
    this.#capacity = capacity;
    this.#total = total;
  }

  add(id: string, e: NetworkLogEntry): void {
    let ring = this.#rings.get(id);
    if (!ring) this.#rings.set(id, (ring = new LogRing(this.#capacity)));
    this.#size += ring.push(e) ? 1 : 0;
    if (this.#size > this.#total) this.#trim();
    if (e.protocol === 'dns' && e.name && e.answers?.length) this.remember(id, e.name, e.answers);
    for (const f of this.#followers) if (f.id === id && matches(e, f.filter)) f.onEntry(e);
  }

  list(id: string, filter: LogFilter = {}): NetworkLogEntry[] {
    return this.#rings.get(id)?.list(filter) ?? [];
  }

  /** Calls `onEntry` for each new entry of the sandbox until the returned function is called (or the sandbox goes: `onEnd`). */
  follow(id: string, filter: LogFilter, onEntry: (e: NetworkLogEntry) => void, onEnd: (why: LogEnd) => void): () => void {
    const f: Follower = { id, filter, onEntry, onEnd };
    this.#followers.add(f);
    return () => this.#followers.delete(f);
  }

  /** The name a DNS answer gave this address in this sandbox, if one did lately. */
  nameOf(id: string, address: string): string | undefined {
    const hit = this.#names.get(id)?.get(address);
    return hit && hit.until > Date.now() ? hit.name : undefined;
  }

  /** Forgets every sandbox not in `ids` (removed): its ring, its names, and its followers end. */
  keepOnly(ids: ReadonlySet<string>): void {
    for (const id of [...this.#rings.keys(), ...this.#names.keys()]) if (!ids.has(id)) this.drop(id);
    for (const f of this.#followers) if (!ids.has(f.id)) this.#end(f, 'removed');
  }

  /** Ends every follower (the gateway stops). */
  endAll(): void {
    for (const f of this.#followers) this.#end(f, 'stopped');
  }

  drop(id: string): void {
    this.#size -= this.#rings.get(id)?.size ?? 0;
    this.#rings.delete(id);
    this.#names.delete(id);
    for (const f of this.#followers) if (f.id === id) this.#end(f, 'removed');
  }

  /** How many entries are held in all (for tests and the bound). */
  get size(): number {
    return this.#size;
  }

  /** Over the total: the fullest ring loses its oldest entries (a hundredth of the total at once). */
  #trim(): void {
    let fullest: LogRing | undefined;
    for (const r of this.#rings.values()) if (!fullest || r.size > fullest.size) fullest = r;
    if (fullest) this.#size -= fullest.dropOldest(Math.max(1, Math.ceil(this.#total / 100)));
  }

  #end(f: Follower, why: LogEnd): void {
    this.#followers.delete(f);
    f.onEnd(why);
  }

  /** That a DNS answer gave the sandbox these addresses for this name (for its kernel entries). */
  remember(id: string, name: string, answers: string[]): void {
    let names = this.#names.get(id);
    if (!names) this.#names.set(id, (names = new Map()));
    for (const a of answers) {
      names.delete(a); // re-inserted last: the map's order is the age
      names.set(a, { name, until: Date.now() + NAME_TTL_MS });
    }
    while (names.size > NAMES_PER_SANDBOX) names.delete(names.keys().next().value!);
  }
}

const printable = (v: unknown, max: number): v is string => typeof v === 'string' && v.length > 0 && v.length <= max && /^[\x20-\x7e]+$/.test(v);

/**
 * A name as sent (a query's, a Host's): bytes outside printable ASCII, and the backslash, written
 * `\xNN`, and cut at 255 characters. Never dropped: a name made unprintable on purpose (to
 * carry data out through DNS) must show in the log, not vanish from it.
 */
export function shownName(v: string): string {
  const escaped = v.replace(/[^\x20-\x5b\x5d-\x7e]/g, (c) => {
    const code = c.charCodeAt(0);
    return code < 256 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
  return escaped.length > 255 ? `${escaped.slice(0, 252)}...` : escaped;
}

/** A query type as dns-packet names it, or TYPEnnn for one it does not know (HTTPS is 65, SVCB 64). */
function shownType(v: unknown): string | undefined {
  if (typeof v !== 'string') return undefined;
  if (/^[A-Z0-9]{1,12}$/.test(v)) return v;
  const n = /^UNKNOWN_(\d{1,5})$/.exec(v)?.[1];
  return n ? `TYPE${n}` : undefined;
}

/**
 * An entry from the egress worker, checked field by field (it parses what sandboxes send: its
 * words are not trusted); undefined when anything is off. The time is the gateway's when the
 * worker's is not within a minute of it.
 */
export function checkedEntry(raw: unknown): NetworkLogEntry | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  if (r.source !== 'dns' && r.source !== 'proxy') return undefined;
  if (r.protocol !== (r.source === 'dns' ? 'dns' : 'tcp')) return undefined;
  if (r.verdict !== 'allowed' && r.verdict !== 'blocked') return undefined;
  if (!printable(r.rule, 300)) return undefined;
  if (r.address !== undefined && (typeof r.address !== 'string' || r.address.length > 45 || isIP(r.address) === 0)) return undefined;
  if (r.port !== undefined && !isPort(r.port)) return undefined;
  if (r.name !== undefined && (typeof r.name !== 'string' || r.name.length === 0 || r.name.length > 4096)) return undefined;
  if (r.answers !== undefined && !(Array.isArray(r.answers) && r.answers.length <= 1024 && r.answers.every((a) => typeof a === 'string' && a.length <= 45 && isIP(a) !== 0))) return undefined;
  const type = shownType(r.type);
  const at = typeof r.time === 'string' ? Date.parse(r.time) : NaN;
  const time = Number.isFinite(at) && Math.abs(at - Date.now()) < 60_000 ? new Date(at).toISOString() : new Date().toISOString();
  return {
    time,
    source: r.source,
    protocol: r.protocol as string,
    ...(r.address !== undefined ? { address: r.address as string } : {}),
    ...(r.port !== undefined ? { port: r.port as number } : {}),
    ...(r.name !== undefined ? { name: shownName(r.name as string) } : {}),
    verdict: r.verdict,
    rule: r.rule as string,
    ...(type !== undefined ? { type } : {}),
    ...(r.answers !== undefined ? { answers: (r.answers as string[]).slice(0, ANSWERS_KEPT) } : {}),
  };
}
