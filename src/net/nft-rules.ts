// Compiles a sandbox's egress policy into one nftables script (pure: no I/O). The script is
// applied in one `nft -f` transaction, so an update is atomic: the old rules stay until the new
// ones are all in. Everything is keyed on the sandbox's own bridge interface, which outlives its
// container, so a restart opens no gap.
//
// One shared table (`inet sbx`) holds every sandbox's rules, so the cost per packet does not grow
// with the number of sandboxes: each hook has one base chain, which looks the packet's bridge up
// in a verdict map (a hash) and jumps to that sandbox's own chains. A packet of no sandbox costs
// one lookup per hook. A sandbox's chains and sets carry its id (`egress_<id>`, `allow4_<id>`...),
// and its script touches only those and its own map elements, so sandboxes stay independent.
//
//   forward (priority -10, before Docker's)   from sbx-ID -> egress_ID; to sbx-ID -> inbound_ID
//   input   (the host's own addresses)        from sbx-ID -> host_ID (only `host` entries,
//                                             address entries, and sbx's DNS and proxy pass)
//   output  (the host's own processes)        to sbx-ID -> local_ID: only root (and the
//                                             gateway's nginx workers) open connections into it
//   prerouting nat                            from sbx-ID -> dnat_ID: DNS to the bridge address
//                                             -> sbx's forwarder; TCP 80/443 -> the Host/SNI proxy
//   postrouting nat                           from sbx-ID -> masq_ID (IPv6 masquerade; IPv6 sandboxes only)
// Every packet the sandbox sends in a connection it opened is checked (not only the first), so a
// change cuts open connections at once; replies to connections opened from outside (the
// gateway's requests to exposed ports) always pass. Refused packets get a TCP reset or an ICMP
// "administratively prohibited", so clients fail at once instead of timing out.
import { PROTECTED_V4, PROTECTED_V6, type CompiledPolicy, type PortRange } from '../core/network-policy.ts';
import { mergeCidrs } from '../core/address-ranges.ts';
import { mergedPorts, spanElements, type Family } from './ranges.ts';

/** Where the gateway serves sandboxes (its ports on every host address). */
export interface EgressListeners {
  dns: number;
  http: number;
  tls: number;
  /** The nflog group the gateway reads for the network log: the rules log to it (absent: no log rules). */
  log?: number;
}

/** The log prefix of a sandbox's rules: `sbx:<id>:a` (let through) or `sbx:<id>:r` (refused). */
export const logPrefix = (id: string, allowed: boolean) => `sbx:${id}:${allowed ? 'a' : 'r'}`;
/**
 * How many new connections a second each sandbox's rules log, per verdict, after a burst: a flood
 * of connects inside one sandbox costs the log a few lines a second, never the disk or the others.
 */
const LOG_LIMIT = 'limit rate 50/second burst 200 packets';
/** The chains a sandbox's verdicts go through when its rules log (`allowed_<id>`, `refused_<id>`). */
const LOG_CHAINS = ['allowed', 'refused'] as const;

export interface SandboxLink {
  id: string;
  /** The bridge interface (sbx-<id>). */
  bridge: string;
  /** The network's IPv6 subnet: its outbound IPv6 is masqueraded like Docker does for IPv4. */
  subnet6?: string;
}

export interface LearnedAddress {
  address: string;
  family: Family;
  /** Seconds left. */
  ttl: number;
  /** The ports that `name:port` entries open to it (TCP and UDP). */
  ports: PortRange[];
}

/**
 * The table every sandbox's rules live in, on a host shared by every home, agent and sbx build. It
 * stays once made (a few empty maps cost nothing). Its shared part (`sharedScript`) must read the
 * same in every build that uses this name: a change to it needs a new name (a unit test pins it).
 */
export const TABLE = 'sbx';

// A sandbox's own sets: the address and port entries of its policy. Only those its policy fills
// exist (an empty one, and the rule that reads it, would match nothing): each `nft` run fetches
// every single-field interval set in the ruleset before it adds or deletes an element, so sets
// that are there for nothing would make every sandbox's updates slower with the count.
const STATIC_SETS: Array<[string, string]> = [
  ['allow4', 'ipv4_addr; flags interval'],
  ['allow6', 'ipv6_addr; flags interval'],
  ['deny4', 'ipv4_addr; flags interval'],
  ['deny6', 'ipv6_addr; flags interval'],
  ['allowports', 'inet_service; flags interval'],
  ['denyports', 'inet_service; flags interval'],
  ['hostports', 'inet_service; flags interval'],
  // Per-sandbox copies of the protected ranges, kept by sbx before they were shared: deleted.
  ['protected4', 'ipv4_addr; flags interval'],
  ['protected6', 'ipv6_addr; flags interval'],
];
// What no sandbox may reach unless an address entry opens it, shared by every sandbox. Named after
// its contents, so that a build with another list writes its own set and never changes this one.
// Worked out on first use, not when the module loads (every command loads it; few write rules).
let protectedSets: Array<{ name: string; type: string; items: string[] }> | undefined;
const protectedSetsOnce = () =>
  (protectedSets ??= ([4, 6] as const).map((family) => {
    const items = spanElements(mergeCidrs(family === 4 ? PROTECTED_V4 : PROTECTED_V6, family), family);
    const type = `ipv${family}_addr; flags interval`;
    const name = `protected${family}_${fnv1a(`${type} ${items.join(',')}`).toString(16).padStart(8, '0')}`;
    return { name, type, items };
  }));
// An address that a `name:port` entry's DNS answer opened, with exactly those ports.
const LEARNED_SETS: Array<[string, string]> = [
  ['learned4', 'ipv4_addr . inet_service; flags interval, timeout'],
  ['learned6', 'ipv6_addr . inet_service; flags interval, timeout'],
];
const OWN_SETS = [...STATIC_SETS, ...LEARNED_SETS];
// The mark of a shape written by the gateway (policyScripts: `fillable`): an empty chain of the
// sandbox's, named in a map no rule reads. A fill names it again (an element that jumps to a
// chain that is not there is refused by the kernel, with no chain fetched); any other writer's
// whole script takes it away.
const FILLS_MAP = 'fills';
const markerElement = (t: string, id: string, bridge: string) => mapElement(t, FILLS_MAP, bridge, own('fill', id));
const fillMarker = (t: string, id: string, bridge: string) => [`add chain inet ${t} ${own('fill', id)}`, markerElement(t, id, bridge)];
const dropFillMarker = (t: string, id: string, bridge: string) => [...fillMarker(t, id, bridge), `delete element inet ${t} ${FILLS_MAP} { "${bridge}" }`, `delete chain inet ${t} ${own('fill', id)}`];
// The shared part: base chains that dispatch by bridge, the maps they look in, and how refusals
// are answered. Nothing a policy decides is here.
/** Per-sandbox chain -> the map (and the direction of its key) that sends packets there. */
const DISPATCH: Array<{ chain: string; map: string; key: 'iifname' | 'oifname'; base: string }> = [
  { chain: 'egress', map: 'from_sandbox', key: 'iifname', base: 'forward' },
  { chain: 'inbound', map: 'to_sandbox', key: 'oifname', base: 'forward' },
  { chain: 'host', map: 'to_host', key: 'iifname', base: 'input' },
  { chain: 'local', map: 'from_host', key: 'oifname', base: 'output' },
  { chain: 'dnat', map: 'nat_from_sandbox', key: 'iifname', base: 'prerouting' },
  { chain: 'masq', map: 'masq_from_sandbox', key: 'iifname', base: 'postrouting' },
];
const BASE_CHAINS: Array<[string, string]> = [
  ['forward', 'type filter hook forward priority -10; policy accept;'],
  ['input', 'type filter hook input priority -10; policy accept;'],
  ['output', 'type filter hook output priority -10; policy accept;'],
  ['prerouting', 'type nat hook prerouting priority -110; policy accept;'],
  ['postrouting', 'type nat hook postrouting priority 90; policy accept;'],
];

/** The name of one of a sandbox's own chains or sets. */
export const own = (name: string, id: string) => `${name}_${id}`;

/**
 * The shared skeleton, written in full by every script: the same text from every process, so
 * concurrent transactions (several gateways, homes or agents) leave it the same.
 */
export function sharedScript(t: string = TABLE): string[] {
  const out = declareShared(t);
  out.push(`add chain inet ${t} refuse`);
  for (const [name, spec] of BASE_CHAINS) out.push(`add chain inet ${t} ${name} { ${spec} }`);
  for (const [name] of [...BASE_CHAINS, ['refuse']]) out.push(`flush chain inet ${t} ${name}`);
  for (const { map, key, base } of DISPATCH) out.push(`add rule inet ${t} ${base} ${key} vmap @${map}`);
  // A sandbox bridge with no entry in the maps (its rules not in yet, or taken away behind sbx's
  // back) is refused rather than let through: its own chains end in a verdict, so only such a
  // bridge's packets get here.
  for (const base of ['forward', 'input']) out.push(`add rule inet ${t} ${base} iifname "sbx-*" goto refuse`);
  out.push(`add rule inet ${t} refuse meta l4proto tcp reject with tcp reset`);
  out.push(`add rule inet ${t} refuse reject with icmpx type admin-prohibited`);
  return out;
}

/** The table and its maps, declared only (a no-op where they exist): what a removal needs. */
function declareShared(t: string): string[] {
  return [`add table inet ${t}`, ...DISPATCH.map(({ map }) => `add map inet ${t} ${map} { type ifname : verdict; }`)];
}

/** Declares a sandbox's own sets and chains (a no-op for those that exist). */
function declareOwn(t: string, id: string, sets = OWN_SETS, chains = DISPATCH, olderTable = true): string[] {
  // sbx kept a table per sandbox (`sbx_<id>`) before the shared one: a gateway's start and a
  // removal take it, so that old rules never run beside the new ones (not for other tables).
  const out = t === TABLE && olderTable ? [`add table inet sbx_${id}`, `delete table inet sbx_${id}`] : [];
  for (const [name, type] of sets) out.push(`add set inet ${t} ${own(name, id)} { type ${type}; }`);
  for (const { chain } of chains) out.push(`add chain inet ${t} ${own(chain, id)}`);
  return out;
}

/** A mark for connections opened through DNS-learned addresses under this very policy. */
export function policyMark(p: CompiledPolicy): number {
  return (fnv1a(JSON.stringify(p.policy)) & 0x7ffffff0) | 0x5; // never 0 (unmarked)
}

/** A 32-bit FNV-1a hash: short stable names and marks, without loading node:crypto. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const ch of text) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return h;
}

/** Whether DNS answers open addresses for this sandbox (its `name:port` entries). */
export function learnsAddresses(p: CompiledPolicy): boolean {
  return p.allow.portDomains.size + p.allow.portWildcards.size > 0;
}

/** Whether sbx's DNS forwarder serves this sandbox (block-all without allowed names gets none). */
export function servesDns(p: CompiledPolicy): boolean {
  const a = p.allow;
  return p.mode === 'allow-all' || a.all || a.domains.size + a.wildcards.size + a.portDomains.size + a.portWildcards.size > 0;
}

/** One learned address as set elements: `addr . port-range timeout Ns`, one per range. */
function learnedElements(l: LearnedAddress): string[] {
  const timeout = `timeout ${Math.max(1, Math.ceil(l.ttl))}s`;
  return mergedPorts(l.ports).map((ports) => `${l.address} . ${ports} ${timeout}`);
}

/**
 * A set emptied and filled, or deleted when there is nothing to put in it. The elements go in
 * through `add set ... { elements = ... }`, never `add element`: that one makes nft fetch the
 * elements of every interval set in the ruleset first, which grows with the number of sandboxes.
 * Chunked so that one line never grows unbounded with thousands of entries.
 */
function fillSet(table: string, set: string, type: string, items: string[], keepEmpty = false): string[] {
  const declared = `add set inet ${table} ${set} { type ${type}; }`;
  if (items.length === 0 && !keepEmpty) return [declared, `delete set inet ${table} ${set}`];
  const lines = [declared, `flush set inet ${table} ${set}`];
  for (let i = 0; i < items.length; i += 500) lines.push(`add set inet ${table} ${set} { type ${type}; elements = { ${items.slice(i, i + 500).join(', ')} }; }`);
  return lines;
}

/** A map element put in by declaring the map with it (see fillSet: no `add element`). */
const mapElement = (t: string, map: string, bridge: string, chain: string) => `add map inet ${t} ${map} { type ifname : verdict; elements = { "${bridge}" : jump ${chain} }; }`;

export interface RulesOptions {
  /** The gateway's listeners; without them DNS and names fail closed. */
  listeners?: EgressListeners;
  /** Empty the DNS-learned sets (a policy change) and put these back. */
  relearn?: LearnedAddress[];
  /** The gateway's unprivileged account (its nginx workers): may connect into the sandbox like root. */
  gatewayAccount?: { uid: number; gid: number };
  /** Another table than sbx's (tests that must not touch the shared one). */
  table?: string;
  /**
   * false: leave out the shared part (skeleton, protected sets), for a script that follows one
   * with it in the same run: written a thousand times in one transaction, it doubles its time.
   */
  shared?: boolean;
  /**
   * Also take the table an older sbx kept for this sandbox (`sbx_<id>`). The gateway's start does
   * it for every sandbox (restoreAll) and a removal does; not every apply: deleting a table costs
   * each nft run ~8 ms, a quarter of a warm-pool claim.
   */
  olderTable?: boolean;
  /**
   * The writer remembers the shape it writes and fills later changes of the same shape (the
   * gateway: Egress.fillWhenUnchanged): the whole script leaves the sandbox's fill marker. Any
   * other writer's takes it away, so that a fill of the gateway's after it (the gateway's memory
   * is of a shape no longer in force) is refused, and the whole script runs instead.
   */
  fillable?: boolean;
}

/** The whole script that makes the kernel enforce `p` for one sandbox. */
export function rulesScript(link: SandboxLink, p: CompiledPolicy, opts: RulesOptions = {}): string {
  return policyScripts(link, p, opts).full;
}

/**
 * A sandbox's rules, whole (`full`) and split: `fill`, the lines that fill its own sets and put
 * its entries in the dispatch maps, and `shape`, its chains' rules. Where the shape in force is
 * this one, `fill` alone is the whole change, in one transaction: nft then flushes and adds no
 * rule (which makes it fetch every chain of the ruleset first), so an update that changes only a
 * policy's entries costs about the same with 1,000 sandboxes as with one.
 */
export function policyScripts(link: SandboxLink, p: CompiledPolicy, opts: RulesOptions = {}): { full: string; fill: string; shape: string } {
  const t = opts.table ?? TABLE;
  const id = link.id;
  const shared = opts.shared ?? true;
  // Without IPv6 the masq chain would be empty: there is none (nft lists every chain of the
  // ruleset before each run, about 10 ms per 1,000 chains). One an older sbx made stays, empty,
  // until the removal: taking it here would cost every apply a `delete element`, which makes nft
  // fetch the elements of every interval set of the ruleset first.
  const chains = DISPATCH.filter(({ chain }) => chain !== 'masq' || link.subnet6);
  const out = [...(shared ? sharedScript(t) : []), ...declareOwn(t, id, [], chains, opts.olderTable ?? false)];
  // The chains first: the rules that read a set are gone before the set is emptied or deleted.
  for (const { chain } of chains) out.push(`flush chain inet ${t} ${own(chain, id)}`);
  // With the network log, verdicts go through two chains of the sandbox's that log new
  // connections first. Without it they are left as they are (unused; the removal takes them).
  const logGroup = opts.listeners?.log;
  if (logGroup !== undefined) for (const chain of LOG_CHAINS) out.push(`add chain inet ${t} ${own(chain, id)}`, `flush chain inet ${t} ${own(chain, id)}`);
  if (shared) for (const { name, type, items } of protectedSetsOnce()) out.push(...fillSet(t, name, type, items));

  // The compiled policy already holds merged address spans and parsed ports: nothing is re-parsed.
  const items: Record<string, string[]> = {
    allow4: spanElements(p.allow.v4, 4),
    allow6: spanElements(p.allow.v6, 6),
    deny4: spanElements(p.deny.v4, 4),
    deny6: spanElements(p.deny.v6, 6),
    allowports: mergedPorts(p.allow.ports),
    denyports: mergedPorts(p.deny.ports),
    hostports: mergedPorts(p.allow.host ?? []),
  };
  // The fill (policyScripts) leaves out the sets this shape has none of: they are gone already,
  // and a `delete set` makes nft fetch every chain too.
  const fills: string[] = [];
  const sets = (lines: string[], exists = true) => {
    out.push(...lines);
    if (exists) fills.push(...lines);
  };
  for (const [name, type] of STATIC_SETS) sets(fillSet(t, own(name, id), type, items[name] ?? []), (items[name] ?? []).length > 0);
  // DNS-learned addresses: only for `name:port` entries. They outlive an update without relearn.
  const learns = learnsAddresses(p);
  for (const [family, [name, type]] of [[4, LEARNED_SETS[0]!], [6, LEARNED_SETS[1]!]] as const) {
    if (!learns) sets(fillSet(t, own(name, id), type, []), false);
    else if (!opts.relearn) sets([`add set inet ${t} ${own(name, id)} { type ${type}; }`]);
    else sets(fillSet(t, own(name, id), type, opts.relearn.filter((l) => l.family === family).flatMap(learnedElements), true));
  }
  out.push(...(opts.fillable ? fillMarker(t, id, link.bridge) : dropFillMarker(t, id, link.bridge)));
  const setsEnd = out.length;

  const rule = (chain: string, body: string) => out.push(`add rule inet ${t} ${own(chain, id)} ${body}`);
  const set = (name: string) => `@${own(name, id)}`;
  // A rule that reads a set the policy leaves empty would match nothing: it is left out.
  const has = (name: string) => items[name]!.length > 0;
  // One rule per protocol or value rather than an inline set (`{ tcp, udp }`): every `nft` run
  // fetches every set in the ruleset, anonymous ones included, but never the rules.
  const each = (chain: string, values: readonly (string | number)[], body: (v: string | number) => string) => values.forEach((v) => rule(chain, body(v)));
  const TCP_UDP = ['tcp', 'udp'] as const;
  const [protected4, protected6] = protectedSetsOnce().map(({ name }) => `@${name}`);
  const mark = policyMark(p);
  const listeners = opts.listeners;
  const dns = servesDns(p) && listeners;
  const proxy = p.hasDomains && listeners;
  const ACCEPT = logGroup !== undefined ? `goto ${own('allowed', id)}` : 'accept';
  const REFUSE = logGroup !== undefined ? `goto ${own('refused', id)}` : 'goto refuse';
  if (logGroup !== undefined) {
    rule('allowed', `ct state new ${LOG_LIMIT} log prefix "${logPrefix(id, true)}" group ${logGroup}`);
    rule('allowed', 'accept');
    rule('refused', `ct state new ${LOG_LIMIT} log prefix "${logPrefix(id, false)}" group ${logGroup}`);
    rule('refused', 'goto refuse');
  }

  // Docker isolates sandbox networks for IPv4 only: IPv6 between bridges, and new IPv6
  // connections into the sandbox from outside, are refused here (replies still pass).
  rule('egress', `oifname "sbx-*" oifname != "${link.bridge}" ${REFUSE}`);
  rule('inbound', `iifname != "${link.bridge}" meta nfproto ipv6 ct direction original goto refuse`);
  // The host's own addresses (bridge gateways included): only sbx's DNS and proxy (redirected
  // there by the rules below), `host` entries and address entries that name them.
  rule('host', 'ct direction reply accept');
  // IPv6 needs neighbour discovery with its router (the bridge) to get anywhere at all.
  each('host', ['nd-neighbor-solicit', 'nd-neighbor-advert', 'nd-router-solicit'], (type) => `icmpv6 type ${type} accept`);
  if (dns) each('host', TCP_UDP, (proto) => `${proto} dport ${listeners.dns} ct status dnat accept`);
  if (proxy) each('host', [listeners.http, listeners.tls], (port) => `tcp dport ${port} ct status dnat accept`);
  if (p.allow.host?.length === 0) rule('host', ACCEPT);
  else if (p.allow.host) each('host', TCP_UDP, (proto) => `${proto} dport ${set('hostports')} ${ACCEPT}`);
  if (has('allow4')) rule('host', `ip daddr ${set('allow4')} ${ACCEPT}`);
  if (has('allow6')) rule('host', `ip6 daddr ${set('allow6')} ${ACCEPT}`);
  rule('host', REFUSE);
  // Local users reach the sandbox only through the gateway (root, and its nginx workers as
  // sbx-gateway with that user's own group): a private port's token is checked there, so nobody
  // else opens connections into it. Replies to its own always pass.
  const opened = 'ct direction original ct state new';
  const account = opts.gatewayAccount;
  if (!account) rule('local', `${opened} meta skuid != 0 goto refuse`);
  else {
    rule('local', `${opened} meta skuid != 0 meta skuid != ${account.uid} goto refuse`);
    rule('local', `${opened} meta skuid ${account.uid} meta skgid != ${account.gid} goto refuse`);
  }

  rule('egress', 'ct direction reply accept');
  // Only this policy's learned rules set its mark: without them the rule would match nothing (and
  // the mark, a hash of the policy, would make every update change the chain's shape).
  if (learns) rule('egress', `ct mark ${mark} accept`);
  if (has('allow4')) rule('egress', `ip daddr ${set('allow4')} ${ACCEPT}`);
  if (has('allow6')) rule('egress', `ip6 daddr ${set('allow6')} ${ACCEPT}`);
  // Loopback, private, link-local, metadata: only the address entries above open them.
  rule('egress', `ip daddr ${protected4} ${REFUSE}`);
  rule('egress', `ip6 daddr ${protected6} ${REFUSE}`);
  if (p.allow.all) rule('egress', ACCEPT);
  if (has('allowports')) each('egress', TCP_UDP, (proto) => `${proto} dport ${set('allowports')} ${ACCEPT}`);
  if (learns) {
    for (const [ip, family] of [['ip', 4], ['ip6', 6]] as const) each('egress', TCP_UDP, (proto) => `${ip} daddr . ${proto} dport ${set(`learned${family}`)} ct mark set ${mark} ${ACCEPT}`);
  }
  // Names matter: web ports go to the proxy (redirected below); without it they fail closed.
  if (p.hasDomains) each('egress', [80, 443], (port) => `tcp dport ${port} ${REFUSE}`);
  if (p.mode === 'allow-all') {
    if (has('deny4')) rule('egress', `ip daddr ${set('deny4')} ${REFUSE}`);
    if (has('deny6')) rule('egress', `ip6 daddr ${set('deny6')} ${REFUSE}`);
    if (has('denyports')) each('egress', TCP_UDP, (proto) => `${proto} dport ${set('denyports')} ${REFUSE}`);
    rule('egress', ACCEPT);
  } else {
    rule('egress', REFUSE);
  }

  if (link.subnet6) rule('masq', `ip6 saddr ${link.subnet6} oifname != "${link.bridge}" masquerade`);
  // DNS to any of the host's own addresses (resolv.conf names the bridge's) reaches the forwarder;
  // no address in the rule, so the rules can go in before the network exists.
  if (dns) each('dnat', TCP_UDP, (proto) => `fib daddr type local ${proto} dport 53 redirect to :${listeners.dns}`);
  if (proxy) {
    rule('dnat', `tcp dport 80 redirect to :${listeners.http}`);
    rule('dnat', `tcp dport 443 redirect to :${listeners.tls}`);
  }
  // Last, so that the sandbox's packets meet its rules only once they are all in (one transaction
  // anyway); adding an element that is there with the same verdict is a no-op.
  const rulesEnd = out.length;
  for (const { chain, map } of chains) out.push(mapElement(t, map, link.bridge, own(chain, id)));
  const text = (lines: string[]) => lines.join('\n') + '\n';
  // The fill first names the marker (refused when it is not there).
  const fill = [markerElement(t, id, link.bridge), ...fills, ...out.slice(rulesEnd)];
  return { full: text(out), fill: text(fill), shape: text(out.slice(setsEnd, rulesEnd)) };
}

/**
 * Removes a sandbox's rules (its map elements, chains and sets); safe when they are already gone.
 * By id, the bridge is sbx's own name for it (`sbx-<id>`).
 */
export function removeScript(sandbox: string | SandboxLink, table: string = TABLE): string {
  const t = table;
  const { id, bridge } = typeof sandbox === 'string' ? { id: sandbox, bridge: `sbx-${sandbox}` } : sandbox;
  // Only declarations of the shared part: a removal never rewrites what other sandboxes use.
  const out = [...declareShared(t), ...declareOwn(t, id)];
  // Each delete needs its object: it is declared (added) first, in the same transaction.
  for (const { chain, map } of DISPATCH) {
    out.push(mapElement(t, map, bridge, own(chain, id)));
    out.push(`delete element inet ${t} ${map} { "${bridge}" }`);
  }
  for (const { chain } of DISPATCH) out.push(`flush chain inet ${t} ${own(chain, id)}`, `delete chain inet ${t} ${own(chain, id)}`);
  // The log chains after the chains that jump to them.
  for (const chain of LOG_CHAINS) out.push(`add chain inet ${t} ${own(chain, id)}`, `flush chain inet ${t} ${own(chain, id)}`, `delete chain inet ${t} ${own(chain, id)}`);
  out.push(...dropFillMarker(t, id, bridge));
  for (const [name] of OWN_SETS) out.push(`delete set inet ${t} ${own(name, id)}`);
  return out.join('\n') + '\n';
}

/**
 * Opens DNS-learned addresses for `ttl` seconds. Adding an element that exists keeps its old
 * timeout, so each is added, deleted and added again in the same transaction: that refreshes it.
 */
export function learnScript(id: string, learned: LearnedAddress[], table: string = TABLE): string {
  const out: string[] = [];
  for (const l of learned) {
    // Not declared: where it is gone (the sandbox removed, its policy without `name:port` entries
    // in force), the run fails rather than leave a set behind.
    const set = `inet ${table} ${own(`learned${l.family}`, id)}`;
    for (const element of learnedElements(l)) {
      const key = element.replace(/ timeout \d+s$/, '');
      out.push(`add element ${set} { ${key} timeout 1s }`);
      out.push(`delete element ${set} { ${key} }`);
      out.push(`add element ${set} { ${element} }`);
    }
  }
  return out.join('\n') + '\n';
}
