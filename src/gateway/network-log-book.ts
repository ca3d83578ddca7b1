// The daemon's network log: one bounded ring per sandbox (core/network-log.ts), fed by the kernel
// (nflog, network-log-service.ts) and by the egress worker (its DNS forwarder and proxy), read by
// `sbx network log` and followed live. Rings live in memory only: they go with the sandbox, and a
// gateway that restarts starts them empty.
import { isIP } from 'node:net';
import { LogRing, matches, type LogFilter, type NetworkLogEntry } from '../core/network-log.ts';

interface Follower {
  id: string;
  filter: LogFilter;
  onEntry(e: NetworkLogEntry): void;
  onEnd(): void;
}

/** How many address -> name pairs (from DNS answers) are kept per sandbox, and for how long. */
const NAMES_PER_SANDBOX = 4096;
const NAME_TTL_MS = 15 * 60_000;

export class NetworkLogBook {
  readonly #rings = new Map<string, LogRing>();
  readonly #names = new Map<string, Map<string, { name: string; until: number }>>();
  readonly #followers = new Set<Follower>();
  readonly #capacity: number | undefined;

  constructor(capacity?: number) {
    this.#capacity = capacity;
  }

  add(id: string, e: NetworkLogEntry): void {
    let ring = this.#rings.get(id);
    if (!ring) this.#rings.set(id, (ring = new LogRing(this.#capacity)));
    ring.push(e);
    if (e.protocol === 'dns' && e.name && e.answers?.length) this.remember(id, e.name, e.answers);
    for (const f of this.#followers) if (f.id === id && matches(e, f.filter)) f.onEntry(e);
  }

  list(id: string, filter: LogFilter = {}): NetworkLogEntry[] {
    return this.#rings.get(id)?.list(filter) ?? [];
  }

  /** Calls `onEntry` for each new entry of the sandbox until the returned function is called (or the sandbox goes: `onEnd`). */
  follow(id: string, filter: LogFilter, onEntry: (e: NetworkLogEntry) => void, onEnd: () => void): () => void {
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
    for (const f of this.#followers) if (!ids.has(f.id)) this.#end(f);
  }

  drop(id: string): void {
    this.#rings.delete(id);
    this.#names.delete(id);
    for (const f of this.#followers) if (f.id === id) this.#end(f);
  }

  /** How many entries are held in all (for tests and the bound). */
  get size(): number {
    let n = 0;
    for (const r of this.#rings.values()) n += r.size;
    return n;
  }

  #end(f: Follower): void {
    this.#followers.delete(f);
    f.onEnd();
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
  if (r.port !== undefined && !(Number.isSafeInteger(r.port) && (r.port as number) >= 1 && (r.port as number) <= 65535)) return undefined;
  if (r.name !== undefined && !printable(r.name, 255)) return undefined;
  if (r.type !== undefined && !(typeof r.type === 'string' && /^[A-Z0-9]{0,12}$/.test(r.type))) return undefined;
  if (r.answers !== undefined && !(Array.isArray(r.answers) && r.answers.length <= 64 && r.answers.every((a) => typeof a === 'string' && a.length <= 45 && isIP(a) !== 0))) return undefined;
  const at = typeof r.time === 'string' ? Date.parse(r.time) : NaN;
  const time = Number.isFinite(at) && Math.abs(at - Date.now()) < 60_000 ? new Date(at).toISOString() : new Date().toISOString();
  return {
    time,
    source: r.source,
    protocol: r.protocol as string,
    ...(r.address !== undefined ? { address: r.address as string } : {}),
    ...(r.port !== undefined ? { port: r.port as number } : {}),
    ...(r.name !== undefined ? { name: r.name as string } : {}),
    verdict: r.verdict,
    rule: r.rule as string,
    ...(r.type !== undefined ? { type: r.type as string } : {}),
    ...(r.answers !== undefined ? { answers: r.answers as string[] } : {}),
  };
}
