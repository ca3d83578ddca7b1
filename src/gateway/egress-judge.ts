// The egress proxy's decisions, with the reason a refusal gives (pure: no I/O). The proxy
// classifies each address first (the host's own? a sandbox's?), then asks here. A name is
// judged as a name (Host, SNI), then each of its addresses as sbx's own resolver gave them: the
// proxy connects only to an address judged here, never to what the client named.
import { isIP } from 'node:net';
import { connectionAllowed, decideConnection, explicitlyAllowed, isProtectedAddress, nameAllowed, normalizeName, type CompiledPolicy, type Connection } from '../core/network-policy.ts';
import { canonicalAddress, isLoopbackish } from './host-addresses.ts';

/** An address with what the proxy knows about it. */
export interface Candidate {
  /** Canonical (IPv4-mapped as IPv4). */
  address: string;
  /** One of the host's own addresses (loopback and unspecified included). */
  host: boolean;
  /** In a sandbox's subnet, and not the host's own address there. */
  sandbox: boolean;
}

/** `rule`: what decided, in the policy's words (network-policy.ts: Verdict), for the network log. */
export type Verdict =
  | { ok: true; address: string; toHost: boolean; rule: string }
  | { ok: false; status: 403 | 502; reason: string; rule: string };

/** Rules sbx applies that no policy entry names (beside network-policy.ts's defaults). */
export const RULE = {
  sandbox: 'default: sandbox address',
  unresolved: 'default: no address',
  deniedName: "default: a denied name's address",
  badRequest: 'default: malformed request',
  unknown: 'default: unknown destination',
} as const;

/** A rule named only when read (the network log reads it after its rate limit): the hot path never names one. */
type LazyRule = string | { readonly rule: string };
function withRule<T extends object>(o: T, rule: LazyRule): T & { rule: string } {
  if (typeof rule === 'string') return Object.assign(o, { rule });
  return Object.defineProperty(o, 'rule', { enumerable: true, get: () => rule.rule }) as T & { rule: string };
}
/** The decision that names the rule (network-policy.ts: decideConnection names it when asked). */
const ruleOf = (policy: CompiledPolicy, c: Connection) => decideConnection(policy, c);
const pass = (policy: CompiledPolicy, c: Connection & { address: string; toHost: boolean }): Verdict => withRule({ ok: true as const, address: c.address, toHost: c.toHost }, ruleOf(policy, c));

const PROTECTED = 'a protected address (host, loopback or private network)';

function refuse(reason: string, rule: LazyRule, status: 403 | 502 = 403): Verdict {
  return withRule({ ok: false as const, status, reason: `sbx: ${reason}` }, rule);
}

/**
 * Whether the proxy passes `toHost` for this address. Loopback and the unspecified addresses are
 * the host's too, but stay closed to `host` entries: from a sandbox the kernel never lets
 * anything reach them (only an address entry that names them opens them).
 */
function toHost(c: Candidate): boolean {
  return c.host && !isLoopbackish(c.address);
}

/** Why a connection the policy refuses is refused (the address, when given, is already known to pass its guard). */
function refusal(policy: CompiledPolicy, what: string, c: { name?: string; address?: string; port: number }): Verdict {
  const rule = ruleOf(policy, c);
  if (c.name && nameAllowed(policy, c.name)) return refuse(`${what} is not allowed on port ${c.port} by this sandbox's egress policy`, rule);
  if (policy.mode === 'block-all') return refuse(`${what} is not in this sandbox's egress allow list`, rule);
  // allow-all: a deny entry matched. Its name or address, or else the port.
  if (connectionAllowed(policy, { name: c.name, address: c.address })) return refuse(`port ${c.port} is denied by this sandbox's egress policy`, rule);
  return refuse(`${what} is denied by this sandbox's egress policy`, rule);
}

/**
 * A name judged before it is resolved: a refusal, or undefined when its addresses decide. A name
 * the policy refuses is never resolved (a query for it would carry data out through DNS).
 */
export function judgeNameAlone(policy: CompiledPolicy, rawName: string, port: number): Verdict | undefined {
  const name = normalizeName(rawName);
  return connectionAllowed(policy, { name, port }) ? undefined : refusal(policy, name, { name, port });
}

/** A name from Host or SNI: may it go on `port`, and to which of its addresses (in the order given)? */
export function judgeName(policy: CompiledPolicy, rawName: string, port: number, candidates: readonly Candidate[]): Verdict {
  const name = normalizeName(rawName);
  const first = judgeNameAlone(policy, name, port);
  if (first) return first;
  if (candidates.length === 0) return refuse(`${name} does not resolve`, RULE.unresolved, 502);
  let denied: LazyRule | undefined;
  let guardedBy: LazyRule | undefined;
  for (const c of candidates) {
    if (c.sandbox) {
      guardedBy ??= RULE.sandbox;
      continue;
    }
    const host = toHost(c);
    const conn = { name, address: c.address, port, toHost: host };
    if (connectionAllowed(policy, conn)) return pass(policy, conn);
    if (!host && !c.host && !isProtectedAddress(c.address)) denied ??= ruleOf(policy, conn);
    else guardedBy ??= ruleOf(policy, conn);
  }
  return denied
    ? refuse(`${name} resolves only to addresses this sandbox's egress policy denies`, denied)
    : refuse(`${name} resolves only to protected addresses (host, loopback, private network or sandboxes)`, guardedBy ?? RULE.unresolved);
}

/**
 * A connection that names no host (a bare address in Host, TLS without SNI): judged by that
 * address. `deniedAddresses`: the addresses of names the policy denies (allow-all): they stay
 * denied by address too, unless an allow entry opens them.
 */
export function judgeAddress(policy: CompiledPolicy, c: Candidate, port: number, deniedAddresses?: ReadonlySet<string>): Verdict {
  if (c.sandbox) return refuse(`${c.address} is a sandbox's address (sandboxes cannot reach each other)`, RULE.sandbox);
  const host = toHost(c);
  const conn = { address: c.address, port, toHost: host };
  if (!connectionAllowed(policy, conn)) {
    if (c.host || isProtectedAddress(c.address)) return refuse(`${c.address} is ${PROTECTED}`, ruleOf(policy, conn));
    return refusal(policy, c.address, { address: c.address, port });
  }
  if (policy.mode === 'allow-all' && deniedAddresses?.has(c.address) && !explicitlyAllowed(policy, conn)) {
    return refuse(`${c.address} is an address of a name this sandbox's egress policy denies`, RULE.deniedName);
  }
  return pass(policy, conn);
}

/** Candidates in the order to try: the client's own family first (then the other). */
export function preferFamily<T extends { address: string }>(candidates: readonly T[], family: 4 | 6): T[] {
  const first = candidates.filter((c) => (isIP(c.address) === 6) === (family === 6));
  const rest = candidates.filter((c) => !first.includes(c));
  return [...first, ...rest];
}

// ---- HTTP request targets ------------------------------------------------------------------

/** What a Host header or an absolute-form authority names. */
export interface HostTarget {
  name?: string;
  address?: string;
  port?: number;
}

const LABEL = '[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?';
const HOST_NAME = new RegExp(`^(${LABEL}(?:\\.${LABEL})*\\.?)(?::(\\d{1,5}))?$`, 'i');

/** Parses "name[:port]", "a.b.c.d[:port]" or "[v6][:port]"; undefined when it is none of them. */
export function parseHost(text: string | undefined): HostTarget | undefined {
  if (text === undefined) return undefined;
  const t = text.trim();
  const v6 = /^\[([0-9a-f:.]+)\](?::(\d{1,5}))?$/i.exec(t);
  if (v6) {
    const address = isIP(v6[1]!) === 6 ? canonicalAddress(v6[1]!) : undefined;
    return address ? { address, ...(v6[2] ? { port: Number(v6[2]) } : {}) } : undefined;
  }
  const m = HOST_NAME.exec(t);
  if (!m) return undefined;
  const port = m[2] ? Number(m[2]) : undefined;
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  const host = m[1]!;
  if (isIP(host) === 4) return { address: canonicalAddress(host)!, ...(port ? { port } : {}) };
  return { name: normalizeName(host), ...(port ? { port } : {}) };
}

const sameTarget = (a: HostTarget, b: HostTarget) => a.name === b.name && a.address === b.address && (a.port ?? 80) === (b.port ?? 80);

/** One line, no control characters, bounded: what a refusal may echo of the client's bytes. */
export function printable(text: string): string {
  const t = text.replace(/[^\x20-\x7e]/g, '?');
  return t.length > 100 ? `${t.slice(0, 100)}...` : t;
}

export type RequestCheck = { ok: true; target: HostTarget; path: string } | { ok: false; reason: string };

/**
 * One HTTP request's own consistency, before any policy: exactly one Host header naming a host,
 * and an absolute-form target only when its authority is that Host's. `path`: the target in
 * origin form, as it goes upstream (the upstream sees only the Host that was judged).
 */
export function checkRequest(url: string, rawHeaders: readonly string[]): RequestCheck {
  const hosts: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === 'host') hosts.push(rawHeaders[i + 1]!);
  if (hosts.length > 1) return { ok: false, reason: 'sbx: the request has more than one Host header' };
  if (hosts.length === 0) {
    // HTTP/1.0 may name no host (HTTP/1.1 cannot: Node answers 400 itself): judged by its destination.
    return url.startsWith('/') ? { ok: true, target: {}, path: url } : { ok: false, reason: 'sbx: the request has no Host header' };
  }
  const target = parseHost(hosts[0]);
  if (!target) return { ok: false, reason: `sbx: the Host header "${printable(hosts[0]!)}" names no host` };
  if (url.startsWith('/') || url === '*') return { ok: true, target, path: url };
  const abs = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(.*)$/is.exec(url);
  if (!abs) return { ok: false, reason: `sbx: the request target "${printable(url)}" is not a path or an http:// URL` };
  const authority = abs[2]!.includes('@') || abs[1]!.toLowerCase() !== 'http' ? undefined : parseHost(abs[2]!);
  if (!authority || !sameTarget(authority, target)) {
    return { ok: false, reason: `sbx: the request target's authority "${printable(abs[2]!)}" is not its Host header "${printable(hosts[0]!)}"` };
  }
  const rest = abs[3]!;
  return { ok: true, target, path: rest.startsWith('/') ? rest : `/${rest}` };
}

/** A refusal as an HTTP/1.1 response: 403 (or 502), one line of text, and the connection closes. */
export function refusalResponse(status: 403 | 502, reason: string): { head: Record<string, string>; body: string } {
  const body = `${reason}\n`;
  return {
    head: { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': String(Buffer.byteLength(body)), Connection: 'close' },
    body,
  };
}

