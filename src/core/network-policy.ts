// A sandbox's outbound (egress) policy: parsing, validation and the one decision function that the
// DNS forwarder and the Host/SNI proxy share. The kernel rules (src/net) compile the same logic.
//
// The rules, in order:
//   0. Protected destinations (the host, loopback, link-local, private ranges, metadata addresses,
//      other sandboxes) pass only by an allow entry that names their address or CIDR (or `host`
//      for the host's own addresses): no name, port, `all` or mode opens them.
//   1. Anything an allow entry matches passes (allow beats deny): an address/CIDR containing the
//      destination, a port range containing its port, `all`, or a name: a plain name or wildcard
//      on 80 (Host) and 443 (SNI) only, a `name:port` entry on exactly its ports.
//   2. In block-all nothing else passes.
//   3. In allow-all, a deny entry that matches blocks.
//   4. Everything else passes.
// Address and port entries stand alone: `--allow-port 8080` opens port 8080 on every address of
// the internet (not protected ones).
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

/**
 * Destinations a sandbox never reaches unless an allow entry names their address or CIDR:
 * "this host", loopback, private and shared (CGNAT) ranges, link-local (cloud metadata services:
 * 169.254.169.254, fd00:ec2::254, 100.100.100.200 are inside these), multicast and reserved.
 */
export const PROTECTED_V4 = ['0.0.0.0/8', '10.0.0.0/8', '100.64.0.0/10', '127.0.0.0/8', '169.254.0.0/16', '172.16.0.0/12', '192.168.0.0/16', '224.0.0.0/3'];
// IPv6 that embeds or reaches IPv4 (mapped, compatible, NAT64, 6to4) is protected as a whole:
// it could carry a protected IPv4 address.
export const PROTECTED_V6 = ['::/96', '::ffff:0:0/96', '64:ff9b::/96', '64:ff9b:1::/48', '2002::/16', 'fc00::/7', 'fe80::/10', 'ff00::/8'];
/** Ports that plain name entries open (HTTP judged by Host, TLS by SNI). */
export const WEB_PORTS = [80, 443] as const;

export interface PortRange {
  from: number;
  to: number;
}

/** `ports`: a `name:port` entry (exactly those ports); without it a name opens 80 and 443. */
export type Destination =
  | { kind: 'all' }
  | { kind: 'cidr'; family: 4 | 6; cidr: string }
  | { kind: 'domain'; name: string; ports?: PortRange }
  | { kind: 'wildcard'; suffix: string; ports?: PortRange }
  | { kind: 'host'; ports?: PortRange };

const ACCEPTED_DEST =
  'accepted: an IPv4 or IPv6 address, a CIDR (10.0.0.0/8, 2001:db8::/32), a domain (example.com), a wildcard (*.example.com), a name with ports (github.com:22, *.example.com:8000-8100), host, host:PORT or all';
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
  if (text === '') throw new UsageError(`invalid ${list} entry "${entry}": it is empty (${ACCEPTED_DEST})`);
  const lower = text.toLowerCase();
  if (lower === 'all' || lower === 'all_traffic') return { kind: 'all' };
  const cidr = parseCidr(text);
  if (cidr) return { kind: 'cidr', ...cidr };
  // `name:port`, `*.name:from-to`, `host`, `host:port` (one colon: IPv6 addresses have several).
  const withPorts = /^([^:]+):(\d{1,5}(?:-\d{1,5})?)$/.exec(text);
  const base = normalizeName(withPorts ? withPorts[1]! : text);
  if (base === 'host' || withPorts) {
    if (list !== 'allowOut') throw new UsageError(`invalid ${list} entry "${entry}": host and name:port entries only open (allowOut); deny a name or address instead`);
    let ports: PortRange | undefined;
    try {
      ports = withPorts ? parsePortRange(withPorts[2]!, list) : undefined;
    } catch {
      throw new UsageError(`invalid ${list} entry "${entry}": bad port (${ACCEPTED_DEST}; ports 1-65535)`);
    }
    if (base === 'host') return { kind: 'host', ...(ports ? { ports } : {}) };
    if (base.startsWith('*.') && isDomain(base.slice(2))) return { kind: 'wildcard', suffix: base.slice(2), ports: ports! };
    if (!base.startsWith('*.') && isDomain(base)) return { kind: 'domain', name: base, ports: ports! };
    throw new UsageError(`invalid ${list} entry "${entry}" (${ACCEPTED_DEST})`);
  }
  if (/^[\d.]+(\/\d+)?$/.test(text) || text.includes(':') || text.includes('/') || text.includes('%')) {
    throw new UsageError(`invalid ${list} entry "${entry}": not a valid address or CIDR (${ACCEPTED_DEST})`);
  }
  if (base.startsWith('*.')) {
    const suffix = base.slice(2);
    if (isDomain(suffix)) return { kind: 'wildcard', suffix };
  } else if (isDomain(base)) {
    return { kind: 'domain', name: base };
  }
  throw new UsageError(`invalid ${list} entry "${entry}" (${ACCEPTED_DEST})`);
}

/** How a destination is written back (show, store). */
export function formatDestination(d: Destination): string {
  switch (d.kind) {
    case 'all':
      return 'all';
    case 'domain':
      return withPorts(d.name, d.ports);
    case 'wildcard':
      return withPorts(`*.${d.suffix}`, d.ports);
    case 'host':
      return withPorts('host', d.ports);
    case 'cidr': {
      const [addr, bits] = d.cidr.split('/');
      return (d.family === 4 && bits === '32') || (d.family === 6 && bits === '128') ? addr! : d.cidr;
    }
  }
}

function withPorts(text: string, ports: PortRange | undefined): string {
  return ports ? `${text}:${formatPortRange(ports)}` : text;
}

/** Parses "443" or "8000-8100"; throws a UsageError naming the entry otherwise. */
export function parsePortRange(entry: string | number, list = 'allowPorts'): PortRange {
  const text = String(entry).trim();
  if (text === '') throw new UsageError(`invalid ${list} entry "${entry}": it is empty; accepted: a port 1-65535 or a range like 8000-8100`);
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

const POLICY_KEYS = ['mode', 'allowOut', 'denyOut', 'allowPorts', 'denyPorts'];

/**
 * A policy is an object of known keys with lists where lists belong: anything else (a string, a
 * misspelt key such as deny_out) would otherwise read as allow-all and be reported as in force.
 */
function checkPolicyShape(input: unknown): void {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new UsageError(`the network policy must be an object with ${POLICY_KEYS.join(', ')}; got ${JSON.stringify(input)?.slice(0, 40) ?? String(input)}`);
  }
  const o = input as Record<string, unknown>;
  for (const key of Object.keys(o)) {
    if (!POLICY_KEYS.includes(key)) throw new UsageError(`unknown network policy field "${key.slice(0, 40)}": accepted: ${POLICY_KEYS.join(', ')}`);
  }
  if (o.mode !== undefined && typeof o.mode !== 'string') throw new UsageError(`the network policy's mode must be a string: ${NETWORK_MODES.join(', ')}`);
  for (const key of POLICY_KEYS.slice(1)) {
    const v = o[key];
    if (v === undefined) continue;
    if (!Array.isArray(v) || v.some((e) => typeof e !== 'string' && typeof e !== 'number')) throw new UsageError(`the network policy's ${key} must be a list of strings`);
  }
}

/** Validates and normalises a policy; `denyOut: all` becomes block-all. Throws on the first bad entry. */
export function normalizePolicy(input: NetworkPolicyInput = {}): NetworkPolicy {
  checkPolicyShape(input);
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
  /** Plain names (80/443 by Host and SNI). */
  domains: Set<string>;
  /** The names that wildcards cover the subdomains of (`*.x.com` -> `x.com`). */
  wildcards: Set<string>;
  /** `name:port` entries: name -> the ports they open (allow side only). */
  portDomains: Map<string, PortRange[]>;
  portWildcards: Map<string, PortRange[]>;
  /** `host` (undefined: no entry; empty: every port) and `host:PORT` entries. */
  host?: PortRange[];
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

function addTo(map: Map<string, PortRange[]>, key: string, ports: PortRange): void {
  map.set(key, [...(map.get(key) ?? []), ports]);
}

function side(entries: string[], ports: string[], list: string): Side {
  const s: Side = { all: false, domains: new Set(), wildcards: new Set(), portDomains: new Map(), portWildcards: new Map(), v4: [], v6: [], ports: ports.map((p) => parsePortRange(p, list)) };
  const cidrs: string[] = [];
  for (const e of entries) {
    const d = parseDestination(e, list);
    if (d.kind === 'all') s.all = true;
    else if (d.kind === 'domain') d.ports ? addTo(s.portDomains, d.name, d.ports) : s.domains.add(d.name);
    else if (d.kind === 'wildcard') d.ports ? addTo(s.portWildcards, d.suffix, d.ports) : s.wildcards.add(d.suffix);
    else if (d.kind === 'host') s.host = d.ports && s.host?.length !== 0 ? [...(s.host ?? []), d.ports] : [];
    else cidrs.push(d.cidr);
  }
  s.v4 = mergeCidrs(cidrs, 4);
  s.v6 = mergeCidrs(cidrs, 6);
  return s;
}

const names = (s: Side) => s.domains.size + s.wildcards.size + s.portDomains.size + s.portWildcards.size;

export function compilePolicy(policy: NetworkPolicy = DEFAULT_POLICY): CompiledPolicy {
  const allow = side(policy.allowOut, policy.allowPorts, 'allowOut');
  const deny = side(policy.denyOut, policy.denyPorts, 'denyOut');
  const hasDomains = names(allow) + names(deny) > 0;
  return { policy, mode: policy.mode, allow, deny, hasDomains };
}

/** The name and each proper parent (a.b.c -> b.c, c): wildcards are looked up in O(labels). */
function* parents(name: string): Generator<string> {
  for (let dot = name.indexOf('.'); dot >= 0; dot = name.indexOf('.', dot + 1)) yield name.slice(dot + 1);
}

/** A plain entry names it: an exact name or a wildcard's subdomain (`*.x.com` covers `a.x.com`, not `x.com`). */
function nameIn(s: Side, name: string): boolean {
  if (s.domains.has(name)) return true;
  for (const parent of parents(name)) if (s.wildcards.has(parent)) return true;
  return false;
}

/** The ports that `name:port` entries open for a name (empty: none). */
function namePorts(s: Side, name: string): PortRange[] {
  const out = [...(s.portDomains.get(name) ?? [])];
  for (const parent of parents(name)) out.push(...(s.portWildcards.get(parent) ?? []));
  return out;
}

/** Whether an allow entry of any kind names it. */
function nameNamed(s: Side, name: string): boolean {
  return nameIn(s, name) || namePorts(s, name).length > 0;
}

/** Whether the side's name entries open this name on this port (no port: on some port). */
function nameOpens(s: Side, name: string, port: number | undefined): boolean {
  if (nameIn(s, name) && (port === undefined || (WEB_PORTS as readonly number[]).includes(port))) return true;
  const ranges = namePorts(s, name);
  return port === undefined ? ranges.length > 0 : inRanges(ranges, port);
}

function parse(address: string): ipaddr.IPv4 | ipaddr.IPv6 | undefined {
  try {
    return ipaddr.process(address);
  } catch {
    return undefined;
  }
}

function addressIn(s: Side, address: string): boolean {
  const addr = parse(address);
  return addr ? spansContain(addr.kind() === 'ipv4' ? s.v4 : s.v6, addressToBigInt(addr)) : false;
}

export function inRanges(ranges: readonly PortRange[], port: number): boolean {
  return ranges.some((r) => port >= r.from && port <= r.to);
}

function portIn(s: Side, port: number): boolean {
  return inRanges(s.ports, port);
}

// Merged on first use, not when the module loads.
let protectedSpans: Record<4 | 6, Span[]> | undefined;

/** Loopback, private, link-local, metadata, multicast... (see PROTECTED_V4/V6). Unparsable counts as protected. */
export function isProtectedAddress(address: string): boolean {
  const addr = parse(address);
  if (!addr) return true;
  protectedSpans ??= { 4: mergeCidrs(PROTECTED_V4, 4), 6: mergeCidrs(PROTECTED_V6, 6) };
  return spansContain(protectedSpans[addr.kind() === 'ipv4' ? 4 : 6], addressToBigInt(addr));
}

/** Whether an allow entry names this address or a CIDR containing it (what opens a protected one). */
export function addressAllowed(p: CompiledPolicy, address: string): boolean {
  return addressIn(p.allow, address);
}

/** Whether `host`/`host:PORT` entries open the host on this port (no port: on some port). */
export function hostAllowed(p: CompiledPolicy, port?: number): boolean {
  const h = p.allow.host;
  if (!h) return false;
  return h.length === 0 || port === undefined || inRanges(h, port);
}

/** Whether a name is named by an allow entry (plain or with ports). */
export function nameAllowed(p: CompiledPolicy, name: string): boolean {
  return nameNamed(p.allow, normalizeName(name));
}

/**
 * The ports that `name:port` entries open to a name's DNS-learned addresses (the kernel opens
 * exactly these; plain names are judged by the proxy on 80/443 and learn nothing).
 */
export function learnedPorts(p: CompiledPolicy, name: string): PortRange[] {
  return namePorts(p.allow, normalizeName(name));
}

/**
 * Why a decision went the way it did, in the words of the policy: the entry that decided
 * (`allowOut *.example.com`, `denyOut 10.0.0.0/8`, `denyPorts 25`), the mode when no entry did
 * (`mode block-all`, `mode allow-all`), or a default sbx applies whatever the mode
 * (`default: host address`, `default: protected address`).
 */
export interface Verdict {
  allowed: boolean;
  rule: string;
}

/** A decision whose rule is named only when asked (the proxy's hot path never asks). */
interface Judged {
  allowed: boolean;
  why: () => string;
}
const verdict = (allowed: boolean, why: () => string): Judged => ({ allowed, why });
/** The verdicts that name no entry: made once, so the hot path allocates nothing for them. */
const fixed = (allowed: boolean, rule: string): Judged => verdict(allowed, () => rule);
const ALLOW_ALL_ENTRY = fixed(true, 'allowOut all');
const BLOCK_ALL = fixed(false, 'mode block-all');
const ALLOW_ALL = fixed(true, 'mode allow-all');
/** The rule is worked out when it is read (the network log reads it after its rate limit), once. */
const named = (j: Judged): Verdict => {
  let rule: string | undefined;
  return {
    allowed: j.allowed,
    get rule() {
      return (rule ??= j.why());
    },
  };
};

/**
 * A policy's entries parsed once (naming a rule scans them: with thousands of entries, parsing
 * each again at every decision cost milliseconds, and a sandbox chooses how often it asks).
 */
const parsedLists = new WeakMap<CompiledPolicy, { allowOut?: Destination[]; denyOut?: Destination[]; allowPorts?: PortRange[]; denyPorts?: PortRange[] }>();
function parsedList<L extends 'allowOut' | 'denyOut' | 'allowPorts' | 'denyPorts'>(p: CompiledPolicy, list: L): L extends 'allowOut' | 'denyOut' ? Destination[] : PortRange[] {
  let lists = parsedLists.get(p);
  if (!lists) parsedLists.set(p, (lists = {}));
  if (list === 'allowOut' || list === 'denyOut') lists[list as 'allowOut'] ??= p.policy[list].map((e) => parseDestination(e, list as 'allowOut'));
  else lists[list as 'allowPorts'] ??= p.policy[list].map((e) => parsePortRange(e, list as 'allowPorts'));
  return lists[list] as never;
}

/** The first entry of a list whose destination `match` accepts, as `list entry`. */
function entryOf(p: CompiledPolicy, list: 'allowOut' | 'denyOut', match: (d: Destination) => boolean): string {
  const parsed = parsedList(p, list);
  for (let i = 0; i < parsed.length; i++) if (match(parsed[i]!)) return `${list} ${p.policy[list][i]}`;
  return list; // not reached: the compiled side was made of these entries
}

function portEntryOf(p: CompiledPolicy, list: 'allowPorts' | 'denyPorts', port: number): string {
  const i = parsedList(p, list).findIndex((r) => inRanges([r], port));
  return i >= 0 ? `${list} ${p.policy[list][i]}` : list;
}

const cidrRanges = new WeakMap<Destination, ReturnType<typeof ipaddr.parseCIDR>>();
/** A matcher of CIDR entries that contain `address` (parsed once, each entry's range once). */
function cidrHas(address: string): (d: Destination) => boolean {
  const addr = parse(address);
  return (d) => {
    if (d.kind !== 'cidr' || !addr) return false;
    let range = cidrRanges.get(d);
    if (!range) cidrRanges.set(d, (range = ipaddr.parseCIDR(d.cidr)));
    return addr.kind() === range[0].kind() && addr.match(range);
  };
}

/** Whether a name entry names `name` (any ports), or opens it on `port` when `opens` is set. */
function nameEntryHas(d: Destination, name: string, opens?: { port: number | undefined }): boolean {
  if (d.kind !== 'domain' && d.kind !== 'wildcard') return false;
  const named = d.kind === 'domain' ? d.name === name : name.endsWith(`.${d.suffix}`);
  if (!named || !opens) return named;
  if (opens.port === undefined) return true;
  return d.ports ? inRanges([d.ports], opens.port) : (WEB_PORTS as readonly number[]).includes(opens.port);
}

/** Whether sbx's DNS forwarder answers a name (else NXDOMAIN), and the rule that decided. */
export function decideName(p: CompiledPolicy, name: string): Verdict {
  return named(judgeName(p, name));
}

function judgeName(p: CompiledPolicy, name: string): Judged {
  const n = normalizeName(name);
  if (p.allow.all) return ALLOW_ALL_ENTRY;
  if (nameNamed(p.allow, n)) return verdict(true, () => entryOf(p, 'allowOut', (d) => nameEntryHas(d, n)));
  if (p.mode === 'block-all') return BLOCK_ALL;
  if (nameIn(p.deny, n)) return verdict(false, () => entryOf(p, 'denyOut', (d) => nameEntryHas(d, n)));
  return ALLOW_ALL;
}

/** Whether sbx's DNS forwarder answers a name (else NXDOMAIN). */
export function nameResolvable(p: CompiledPolicy, name: string): boolean {
  return judgeName(p, name).allowed;
}

export interface Connection {
  /** The name the client asked for (Host, SNI), when it gave one. */
  name?: string;
  /** The address the connection goes to. */
  address?: string;
  port?: number;
  /** The address is one of the host's own (the proxy connects from the host: it must know). */
  toHost?: boolean;
}

/** A protected address or the host's own: only an address entry (or `host`) opens it, whatever else says. */
function guarded(p: CompiledPolicy, c: Connection): Judged | undefined {
  if (c.toHost) {
    if (hostAllowed(p, c.port)) return verdict(true, () => entryOf(p, 'allowOut', (d) => d.kind === 'host' && (!d.ports || c.port === undefined || inRanges([d.ports], c.port))));
    return guardedByAddress(p, c, 'default: host address');
  }
  if (c.address !== undefined && isProtectedAddress(c.address)) return guardedByAddress(p, c, 'default: protected address');
  return undefined;
}

/** Only an address entry opens a guarded address; refused otherwise, by a deny entry that covers it too (what its user wrote) or by the default. */
function guardedByAddress(p: CompiledPolicy, c: Connection, byDefault: string): Judged {
  const address = c.address;
  if (address !== undefined && addressIn(p.allow, address)) return verdict(true, () => entryOf(p, 'allowOut', cidrHas(address)));
  return verdict(false, () => (address !== undefined && addressIn(p.deny, address) ? entryOf(p, 'denyOut', cidrHas(address)) : byDefault));
}

/** The allow entry that matches (allow beats every deny), if one does. */
function allowedBy(p: CompiledPolicy, c: Connection): Judged | undefined {
  const guard = guarded(p, c);
  if (guard) return guard.allowed ? guard : undefined;
  return listAllows(p, c, c.name ? normalizeName(c.name) : undefined);
}

/** The allow entry that matches an address no default guards. */
function listAllows(p: CompiledPolicy, c: Connection, name: string | undefined): Judged | undefined {
  if (p.allow.all) return ALLOW_ALL_ENTRY;
  if (name && nameOpens(p.allow, name, c.port)) return verdict(true, () => entryOf(p, 'allowOut', (d) => nameEntryHas(d, name, { port: c.port })));
  if (c.address && addressIn(p.allow, c.address)) return verdict(true, () => entryOf(p, 'allowOut', cidrHas(c.address!)));
  if (c.port !== undefined && portIn(p.allow, c.port)) return verdict(true, () => portEntryOf(p, 'allowPorts', c.port!));
  return undefined;
}

/** Whether an allow entry matches (allow beats every deny). */
export function explicitlyAllowed(p: CompiledPolicy, c: Connection): boolean {
  return allowedBy(p, c) !== undefined;
}

/** The one decision: may this outbound connection pass, and by which rule? */
export function decideConnection(p: CompiledPolicy, c: Connection): Verdict {
  return named(judgeConnection(p, c));
}

function judgeConnection(p: CompiledPolicy, c: Connection): Judged {
  const guard = guarded(p, c);
  if (guard) return guard;
  const name = c.name ? normalizeName(c.name) : undefined;
  const allowed = listAllows(p, c, name);
  if (allowed) return allowed;
  if (p.mode === 'block-all') return BLOCK_ALL;
  if (name && nameIn(p.deny, name)) return verdict(false, () => entryOf(p, 'denyOut', (d) => nameEntryHas(d, name)));
  if (c.address && addressIn(p.deny, c.address)) return verdict(false, () => entryOf(p, 'denyOut', cidrHas(c.address!)));
  if (c.port !== undefined && portIn(p.deny, c.port)) return verdict(false, () => portEntryOf(p, 'denyPorts', c.port!));
  return ALLOW_ALL;
}

/** May this outbound connection pass? (decideConnection without naming the rule.) */
export function connectionAllowed(p: CompiledPolicy, c: Connection): boolean {
  return judgeConnection(p, c).allowed;
}

/** Exact denied names (their addresses are refused to clients that connect by address alone). */
export function deniedNames(p: CompiledPolicy): string[] {
  return [...p.deny.domains];
}
