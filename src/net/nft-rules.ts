// Compiles a sandbox's egress policy into one nftables script (pure: no I/O). The script is
// applied in one `nft -f` transaction, so an update is atomic: the old rules stay until the new
// ones are all in. Everything is keyed on the sandbox's own bridge interface, which outlives its
// container, so a restart opens no gap. One table per sandbox keeps sandboxes independent.
//
//   forward (priority -10, before Docker's)   iifname sbx-ID -> egress
//   input   (the host's own addresses)        iifname sbx-ID -> host (only `host` entries,
//                                             address entries, and sbx's DNS and proxy pass)
//   output  (the host's own processes)        only root (and the gateway's nginx workers)
//                                             open connections into the sandbox
//   prerouting nat                            DNS to the bridge address -> sbx's forwarder;
//                                             TCP 80/443 -> the Host/SNI proxy when names matter
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
}

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

export const tableName = (id: string) => `sbx_${id}`;

const STATIC_SETS: Array<[string, string]> = [
  ['allow4', 'ipv4_addr; flags interval'],
  ['allow6', 'ipv6_addr; flags interval'],
  ['deny4', 'ipv4_addr; flags interval'],
  ['deny6', 'ipv6_addr; flags interval'],
  ['protected4', 'ipv4_addr; flags interval'],
  ['protected6', 'ipv6_addr; flags interval'],
  ['allowports', 'inet_service; flags interval'],
  ['denyports', 'inet_service; flags interval'],
  ['hostports', 'inet_service; flags interval'],
];
// An address that a `name:port` entry's DNS answer opened, with exactly those ports.
const LEARNED_SETS: Array<[string, string]> = [
  ['learned4', 'ipv4_addr . inet_service; flags interval, timeout'],
  ['learned6', 'ipv6_addr . inet_service; flags interval, timeout'],
];
const CHAINS: Array<[string, string]> = [
  ['egress', ''],
  ['host', ''],
  ['refuse', ''],
  ['forward', ' { type filter hook forward priority -10; policy accept; }'],
  ['input', ' { type filter hook input priority -10; policy accept; }'],
  ['output', ' { type filter hook output priority -10; policy accept; }'],
  ['prerouting', ' { type nat hook prerouting priority -110; policy accept; }'],
  ['postrouting', ' { type nat hook postrouting priority 90; policy accept; }'],
];

/** A mark for connections opened through DNS-learned addresses under this very policy. */
export function policyMark(p: CompiledPolicy): number {
  let h = 0x811c9dc5;
  for (const ch of JSON.stringify(p.policy)) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return (h & 0x7ffffff0) | 0x5; // never 0 (unmarked)
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

function elements(table: string, set: string, items: string[]): string[] {
  // Chunked so that one line never grows unbounded with thousands of entries.
  const lines: string[] = [];
  for (let i = 0; i < items.length; i += 500) lines.push(`add element inet ${table} ${set} { ${items.slice(i, i + 500).join(', ')} }`);
  return lines;
}

export interface RulesOptions {
  /** The gateway's listeners; without them DNS and names fail closed. */
  listeners?: EgressListeners;
  /** Empty the DNS-learned sets (a policy change) and put these back. */
  relearn?: LearnedAddress[];
  /** The gateway's unprivileged account (its nginx workers): may connect into the sandbox like root. */
  gatewayAccount?: { uid: number; gid: number };
}

/** The whole script that makes the kernel enforce `p` for one sandbox. */
export function rulesScript(link: SandboxLink, p: CompiledPolicy, opts: RulesOptions = {}): string {
  const t = tableName(link.id);
  const iif = `iifname "${link.bridge}"`;
  const out: string[] = [`add table inet ${t}`];
  for (const [name, type] of [...STATIC_SETS, ...LEARNED_SETS]) out.push(`add set inet ${t} ${name} { type ${type}; }`);
  for (const [name, spec] of CHAINS) out.push(`add chain inet ${t} ${name}${spec}`);
  for (const [name] of CHAINS) out.push(`flush chain inet ${t} ${name}`);
  for (const [name] of STATIC_SETS) out.push(`flush set inet ${t} ${name}`);

  // The compiled policy already holds merged address spans and parsed ports: nothing is re-parsed.
  out.push(...elements(t, 'allow4', spanElements(p.allow.v4, 4)));
  out.push(...elements(t, 'allow6', spanElements(p.allow.v6, 6)));
  out.push(...elements(t, 'deny4', spanElements(p.deny.v4, 4)));
  out.push(...elements(t, 'deny6', spanElements(p.deny.v6, 6)));
  out.push(...elements(t, 'protected4', spanElements(mergeCidrs(PROTECTED_V4, 4), 4)));
  out.push(...elements(t, 'protected6', spanElements(mergeCidrs(PROTECTED_V6, 6), 6)));
  out.push(...elements(t, 'allowports', mergedPorts(p.allow.ports)));
  out.push(...elements(t, 'denyports', mergedPorts(p.deny.ports)));
  out.push(...elements(t, 'hostports', mergedPorts(p.allow.host ?? [])));
  if (opts.relearn) {
    out.push(`flush set inet ${t} learned4`, `flush set inet ${t} learned6`);
    for (const family of [4, 6] as const) {
      out.push(...elements(t, `learned${family}`, opts.relearn.filter((l) => l.family === family).flatMap(learnedElements)));
    }
  }

  const rule = (chain: string, body: string) => out.push(`add rule inet ${t} ${chain} ${body}`);
  const mark = policyMark(p);
  const listeners = opts.listeners;
  const dns = servesDns(p) && listeners;
  const proxy = p.hasDomains && listeners;

  // Docker isolates sandbox networks for IPv4 only: IPv6 between bridges, and new IPv6
  // connections into the sandbox from outside, are refused here (replies still pass).
  rule('forward', `${iif} oifname "sbx-*" oifname != "${link.bridge}" goto refuse`);
  rule('forward', `oifname "${link.bridge}" iifname != "${link.bridge}" meta nfproto ipv6 ct direction original goto refuse`);
  rule('forward', `${iif} jump egress`);
  // The host's own addresses (bridge gateways included): only sbx's DNS and proxy (redirected
  // there by the rules below), `host` entries and address entries that name them.
  rule('input', `${iif} jump host`);
  rule('host', 'ct direction reply accept');
  // IPv6 needs neighbour discovery with its router (the bridge) to get anywhere at all.
  rule('host', 'icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept');
  if (dns) rule('host', `meta l4proto { tcp, udp } th dport ${listeners.dns} ct status dnat accept`);
  if (proxy) rule('host', `tcp dport { ${listeners.http}, ${listeners.tls} } ct status dnat accept`);
  if (p.allow.host?.length === 0) rule('host', 'accept');
  else if (p.allow.host) rule('host', 'meta l4proto { tcp, udp } th dport @hostports accept');
  rule('host', 'ip daddr @allow4 accept');
  rule('host', 'ip6 daddr @allow6 accept');
  rule('host', 'goto refuse');
  // Local users reach the sandbox only through the gateway (root, and its nginx workers as
  // sbx-gateway with that user's own group): a private port's token is checked there, so nobody
  // else opens connections into it. Replies to its own always pass.
  const opened = `oifname "${link.bridge}" ct direction original ct state new`;
  const account = opts.gatewayAccount;
  if (!account) rule('output', `${opened} meta skuid != 0 goto refuse`);
  else {
    rule('output', `${opened} meta skuid != { 0, ${account.uid} } goto refuse`);
    rule('output', `${opened} meta skuid ${account.uid} meta skgid != ${account.gid} goto refuse`);
  }

  rule('egress', 'ct direction reply accept');
  rule('egress', `ct mark ${mark} accept`);
  rule('egress', 'ip daddr @allow4 accept');
  rule('egress', 'ip6 daddr @allow6 accept');
  // Loopback, private, link-local, metadata: only the address entries above open them.
  rule('egress', 'ip daddr @protected4 goto refuse');
  rule('egress', 'ip6 daddr @protected6 goto refuse');
  if (p.allow.all) rule('egress', 'accept');
  rule('egress', 'meta l4proto { tcp, udp } th dport @allowports accept');
  rule('egress', `meta l4proto { tcp, udp } ip daddr . th dport @learned4 ct mark set ${mark} accept`);
  rule('egress', `meta l4proto { tcp, udp } ip6 daddr . th dport @learned6 ct mark set ${mark} accept`);
  // Names matter: web ports go to the proxy (redirected below); without it they fail closed.
  if (p.hasDomains) rule('egress', 'tcp dport { 80, 443 } goto refuse');
  if (p.mode === 'allow-all') {
    rule('egress', 'ip daddr @deny4 goto refuse');
    rule('egress', 'ip6 daddr @deny6 goto refuse');
    rule('egress', 'meta l4proto { tcp, udp } th dport @denyports goto refuse');
    rule('egress', 'accept');
  } else {
    rule('egress', 'goto refuse');
  }
  rule('refuse', 'meta l4proto tcp reject with tcp reset');
  rule('refuse', 'reject with icmpx type admin-prohibited');

  if (link.subnet6) rule('postrouting', `ip6 saddr ${link.subnet6} oifname != "${link.bridge}" masquerade`);
  // DNS to any of the host's own addresses (resolv.conf names the bridge's) reaches the forwarder;
  // no address in the rule, so the rules can go in before the network exists.
  if (dns) rule('prerouting', `${iif} fib daddr type local meta l4proto { tcp, udp } th dport 53 redirect to :${listeners.dns}`);
  if (proxy) {
    rule('prerouting', `${iif} tcp dport 80 redirect to :${listeners.http}`);
    rule('prerouting', `${iif} tcp dport 443 redirect to :${listeners.tls}`);
  }
  return out.join('\n') + '\n';
}

/** Removes a sandbox's rules; safe when they are already gone. */
export function removeScript(id: string): string {
  const t = tableName(id);
  return `add table inet ${t}\ndelete table inet ${t}\n`;
}

/**
 * Opens DNS-learned addresses for `ttl` seconds. Adding an element that exists keeps its old
 * timeout, so each is added, deleted and added again in the same transaction: that refreshes it.
 */
export function learnScript(id: string, learned: LearnedAddress[]): string {
  const t = tableName(id);
  const out: string[] = [];
  for (const l of learned) {
    const set = `learned${l.family}`;
    for (const element of learnedElements(l)) {
      const key = element.replace(/ timeout \d+s$/, '');
      out.push(`add element inet ${t} ${set} { ${key} timeout 1s }`);
      out.push(`delete element inet ${t} ${set} { ${key} }`);
      out.push(`add element inet ${t} ${set} { ${element} }`);
    }
  }
  return out.join('\n') + '\n';
}
