// A sandbox's outbound (egress) policy: parsing, validation and the one decision function that the
// DNS forwarder and the Host/SNI proxy share. The kernel rules (src/net) compile the same logic.
//
// The rules, in order:
//   1. Anything an allow entry matches passes (allow beats deny): an address/CIDR containing the
//      destination, a domain or wildcard naming it, a port range containing its port, or `all`.
//   2. In block-all nothing else passes.
//   3. In allow-all, a deny entry that matches blocks; so does link-local IPv4 (169.254.0.0/16).
//   4. Everything else passes.
// Address and port entries stand alone: `--allow-port 8080` opens port 8080 on every address.
import ipaddr from 'ipaddr.js';
import { UsageError } from './errors.ts';
import { addressToBigInt, mergeCidrs, spansContain, type Span } from './address-ranges.ts';
import { DEFAULT_POLICY } from './sandbox.ts';

export type NetworkMode = 'allow-all' | 'block-all';
export const NETWORK_MODES: readonly NetworkMode[] = ['allow-all', 'block-all'];

/** What `sbx network show --json` prints and the store keeps (normalised). */
export interface NetworkPolicy {
  mode: NetworkMode;
  allowOut: string[];
  denyOut: string[];
  allowPorts: string[];
  denyPorts: string[];
}

/** What users may pass (CLI flags, library options). */
export interface NetworkPolicyInput {
  mode?: string;
  allowOut?: readonly string[];
  denyOut?: readonly string[];
  allowPorts?: ReadonlyArray<string | number>;
  denyPorts?: ReadonlyArray<string | number>;
}

export { DEFAULT_POLICY };

/** Where cloud metadata services live: denied unless an allow entry covers it. */
export const LINK_LOCAL_V4 = '169.254.0.0/16';

export type Destination =
  | { kind: 'all' }
  | { kind: 'cidr'; family: 4 | 6; cidr: string }
  | { kind: 'domain'; name: string }
  | { kind: 'wildcard'; suffix: string };

export interface PortRange {
  from: number;
  to: number;
}

const ACCEPTED_DEST = 'accepted: an IPv4 or IPv6 address, a CIDR (10.0.0.0/8, 2001:db8::/32), a domain (example.com), a wildcard (*.example.com) or all';
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Lower case, no trailing dot: how names compare everywhere. */
export function normalizeName(name: string): string {
  return name.trim().toLowerCase().replace(/\.$/, '');
}

function isDomain(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  const labels = name.split('.');
  // A last label of digits only is a mistyped address (999.1.1.1), not a name.
  if (/^\d+$/.test(labels[labels.length - 1]!)) return false;
  return labels.every((l) => LABEL.test(l));
}

function parseCidr(text: string): { family: 4 | 6; cidr: string } | undefined {
  // Cheap test first: names (the common case in long lists) never reach ipaddr.
  if (!text.includes(':') && !/^[\d./]+$/.test(text)) return undefined;
  if (text.includes('%')) return undefined; // zone ids (fe80::1%eth0) mean nothing off the host
  try {
    if (text.includes('/')) {
      if (!ipaddr.isValidCIDR(text)) return undefined;
      const [addr, bits] = ipaddr.parseCIDR(text);
      const plain = addr.kind() === 'ipv6' && (addr as ipaddr.IPv6).isIPv4MappedAddress() ? undefined : addr;
      if (!plain) return undefined;
      const network = addr.kind() === 'ipv4' ? ipaddr.IPv4.networkAddressFromCIDR(text) : ipaddr.IPv6.networkAddressFromCIDR(text);
      return { family: addr.kind() === 'ipv4' ? 4 : 6, cidr: `${network.toString()}/${bits}` };
    }
    if (!ipaddr.isValid(text)) return undefined;
    // Only dotted quads: ipaddr also takes "1" or "0x7f.1", which nobody means as an address.
    if (ipaddr.IPv4.isValidFourPartDecimal(text)) return { family: 4, cidr: `${ipaddr.parse(text).toString()}/32` };
    if (text.includes(':')) {
      const addr = ipaddr.process(text);
      return addr.kind() === 'ipv4' ? { family: 4, cidr: `${addr.toString()}/32` } : { family: 6, cidr: `${addr.toString()}/128` };
    }
  } catch {}
  return undefined;
}

/** Parses one allowOut/denyOut entry; throws a UsageError naming it otherwise. */
export function parseDestination(entry: string, list = 'allowOut'): Destination {
  const text = String(entry).trim();
  const lower = text.toLowerCase();
  if (lower === 'all' || lower === 'all_traffic') return { kind: 'all' };
  const cidr = parseCidr(text);
  if (cidr) return { kind: 'cidr', ...cidr };
  if (/^[\d.]+(\/\d+)?$/.test(text) || text.includes(':') || text.includes('/') || text.includes('%')) {
    throw new UsageError(`invalid ${list} entry "${entry}": not a valid address or CIDR (${ACCEPTED_DEST})`);
  }
  const name = normalizeName(text);
  if (name.startsWith('*.')) {
    const suffix = name.slice(2);
    if (isDomain(suffix)) return { kind: 'wildcard', suffix };
  } else if (isDomain(name)) {
    return { kind: 'domain', name };
  }
  throw new UsageError(`invalid ${list} entry "${entry}" (${ACCEPTED_DEST})`);
}

/** How a destination is written back (show, store). */
export function formatDestination(d: Destination): string {
  switch (d.kind) {
    case 'all':
      return 'all';
    case 'domain':
      return d.name;
    case 'wildcard':
      return `*.${d.suffix}`;
    case 'cidr': {
      const [addr, bits] = d.cidr.split('/');
      return (d.family === 4 && bits === '32') || (d.family === 6 && bits === '128') ? addr! : d.cidr;
    }
  }
}

/** Parses "443" or "8000-8100"; throws a UsageError naming the entry otherwise. */
export function parsePortRange(entry: string | number, list = 'allowPorts'): PortRange {
  const text = String(entry).trim();
  const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(text);
  const from = m ? Number(m[1]) : NaN;
  const to = m ? Number(m[2] ?? m[1]) : NaN;
  if (!m || from < 1 || to > 65535 || from > to) {
    throw new UsageError(`invalid ${list} entry "${entry}": accepted: a port 1-65535 or a range like 8000-8100`);
  }
  return { from, to };
}

export function formatPortRange(r: PortRange): string {
  return r.from === r.to ? String(r.from) : `${r.from}-${r.to}`;
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

/** Validates and normalises a policy; `denyOut: all` becomes block-all. Throws on the first bad entry. */
export function normalizePolicy(input: NetworkPolicyInput = {}): NetworkPolicy {
  let mode = (input.mode ?? 'allow-all').trim().toLowerCase() as NetworkMode;
  if (!NETWORK_MODES.includes(mode)) {
    throw new UsageError(`invalid network mode "${input.mode}": accepted: ${NETWORK_MODES.join(', ')}`);
  }
  const allow = (input.allowOut ?? []).map((e) => parseDestination(e, 'allowOut'));
  const deny = (input.denyOut ?? []).map((e) => parseDestination(e, 'denyOut'));
  if (deny.some((d) => d.kind === 'all')) mode = 'block-all';
  return {
    mode,
    allowOut: unique(allow.map(formatDestination)),
    denyOut: unique(deny.filter((d) => d.kind !== 'all').map(formatDestination)),
    allowPorts: unique((input.allowPorts ?? []).map((p) => formatPortRange(parsePortRange(p, 'allowPorts')))),
    denyPorts: unique((input.denyPorts ?? []).map((p) => formatPortRange(parsePortRange(p, 'denyPorts')))),
  };
}

// ---- matching ------------------------------------------------------------------------------

interface Side {
  all: boolean;
  domains: Set<string>;
  /** The names that wildcards cover the subdomains of (`*.x.com` -> `x.com`). */
  wildcards: Set<string>;
  v4: Span[];
  v6: Span[];
  ports: PortRange[];
}

/** A policy ready for fast decisions. */
export interface CompiledPolicy {
  policy: NetworkPolicy;
  mode: NetworkMode;
  allow: Side;
  deny: Side;
  /** Whether names matter at all: then DNS answers and Host/SNI are checked. */
  hasDomains: boolean;
}

function side(entries: string[], ports: string[], list: string): Side {
  const s: Side = { all: false, domains: new Set(), wildcards: new Set(), v4: [], v6: [], ports: ports.map((p) => parsePortRange(p, list)) };
  const cidrs: string[] = [];
  for (const e of entries) {
    const d = parseDestination(e, list);
    if (d.kind === 'all') s.all = true;
    else if (d.kind === 'domain') s.domains.add(d.name);
    else if (d.kind === 'wildcard') s.wildcards.add(d.suffix);
    else cidrs.push(d.cidr);
  }
  s.v4 = mergeCidrs(cidrs, 4);
  s.v6 = mergeCidrs(cidrs, 6);
  return s;
}

export function compilePolicy(policy: NetworkPolicy = DEFAULT_POLICY): CompiledPolicy {
  const allow = side(policy.allowOut, policy.allowPorts, 'allowOut');
  const deny = side(policy.denyOut, policy.denyPorts, 'denyOut');
  const hasDomains = [allow, deny].some((s) => s.domains.size > 0 || s.wildcards.size > 0);
  return { policy, mode: policy.mode, allow, deny, hasDomains };
}

/** An exact name or a wildcard's subdomain (`*.x.com` covers `a.x.com`, not `x.com`). */
function nameIn(s: Side, name: string): boolean {
  if (s.domains.has(name)) return true;
  // Each proper parent of the name (a.b.c -> b.c, c), looked up: O(labels), not O(entries).
  for (let dot = name.indexOf('.'); dot >= 0; dot = name.indexOf('.', dot + 1)) {
    if (s.wildcards.has(name.slice(dot + 1))) return true;
  }
  return false;
}

function addressIn(s: Side, address: string): boolean {
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.process(address);
  } catch {
    return false;
  }
  return spansContain(addr.kind() === 'ipv4' ? s.v4 : s.v6, addressToBigInt(addr));
}

function portIn(s: Side, port: number): boolean {
  return s.ports.some((r) => port >= r.from && port <= r.to);
}

const linkLocal = ipaddr.parseCIDR(LINK_LOCAL_V4);
function isLinkLocal(address: string): boolean {
  try {
    const addr = ipaddr.process(address);
    return addr.kind() === 'ipv4' && addr.match(linkLocal);
  } catch {
    return false;
  }
}

/** Whether a name is named by an allow entry (its DNS answers then open its addresses). */
export function nameAllowed(p: CompiledPolicy, name: string): boolean {
  return nameIn(p.allow, normalizeName(name));
}

/** Whether sbx's DNS forwarder answers a name (else NXDOMAIN). */
export function nameResolvable(p: CompiledPolicy, name: string): boolean {
  const n = normalizeName(name);
  if (p.allow.all || nameIn(p.allow, n)) return true;
  if (p.mode === 'block-all') return false;
  return !nameIn(p.deny, n);
}

export interface Connection {
  /** The name the client asked for (Host, SNI), when it gave one. */
  name?: string;
  /** The address the connection goes to. */
  address?: string;
  port?: number;
}

/** Whether an allow entry matches (allow beats every deny). */
export function explicitlyAllowed(p: CompiledPolicy, c: Connection): boolean {
  const name = c.name ? normalizeName(c.name) : undefined;
  if (p.allow.all) return true;
  if (name && nameIn(p.allow, name)) return true;
  if (c.address && addressIn(p.allow, c.address)) return true;
  return c.port !== undefined && portIn(p.allow, c.port);
}

/** The one decision: may this outbound connection pass? */
export function connectionAllowed(p: CompiledPolicy, c: Connection): boolean {
  const name = c.name ? normalizeName(c.name) : undefined;
  if (explicitlyAllowed(p, c)) return true;
  if (p.mode === 'block-all') return false;
  if (name && nameIn(p.deny, name)) return false;
  if (c.address && (addressIn(p.deny, c.address) || isLinkLocal(c.address))) return false;
  if (c.port !== undefined && portIn(p.deny, c.port)) return false;
  return true;
}

/** Exact denied names (their addresses are refused to clients that connect by address alone). */
export function deniedNames(p: CompiledPolicy): string[] {
  return [...p.deny.domains];
}
