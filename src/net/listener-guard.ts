// The gateway's egress listeners (DNS forwarder, HTTP and TLS proxy) bind every host address, but
// only sandboxes may use them, and only by the kernel's redirect from their own bridge. One small
// table per gateway refuses everything else on those ports: the LAN, local users, and a sandbox
// that connects to the listener's port directly. The same table keeps the gateway port's limit per
// client address (SBX_GATEWAY_SOURCE_LIMIT), whichever engine serves the port.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import type { EgressListeners } from './nft-rules.ts';
import { runNft } from './nft.ts';

/** One table per SBX_HOME, so a restarted gateway replaces what a crashed one left. */
export const guardTable = (home: string) => `sbxgw_${createHash('sha256').update(home).digest('hex').slice(0, 12)}`;

/** The gateway's address and port, and how many connections one client may hold on it at once (0: no limit). */
export interface SourceLimit {
  host: string;
  port: number;
  limit: number;
  /** Clients the kernel keeps counts for at once (IPv6 ones by /64); by default as many as conntrack tracks connections. */
  size?: number;
}

/** IPv6 clients are counted by /64: a client usually holds a whole one. */
const IPV6_CLIENT = 'ip6 saddr and ffff:ffff:ffff:ffff::';

/**
 * New connections to the gateway port past `limit` from one client are reset at the SYN, in the
 * kernel (conntrack counts the open ones): one client cannot take every connection the gateway's
 * nginx, HAProxy or Node can hold. Local clients (on `lo`: the host's loopback and its own
 * addresses) are not counted, so a gateway on loopback needs no rule. The table of clients holds
 * as many as conntrack holds connections (each client in it has one at least): when it is full,
 * so is conntrack, which then drops new connections anyway; a client not in it is refused rather
 * than let through uncounted.
 */
function sourceLimitRules(table: string, s: SourceLimit | undefined): string[] {
  const to = s?.limit ? gatewayAddress(s.host) : 'loopback';
  if (!s || to === 'loopback') return [];
  const families: Array<['ip' | 'ip6', string, string]> = [];
  if (to.family !== 'ip6') families.push(['ip', 'sources4', 'ip saddr']);
  if (to.family !== 'ip') families.push(['ip6', 'sources6', IPV6_CLIENT]);
  const lines: string[] = [];
  for (const [family, set, client] of families) {
    const match = `tcp dport ${s.port}${to.address ? ` ${family} daddr ${to.address}` : ''} iif != lo ct state new`;
    lines.push(
      `add set inet ${table} ${set} { type ${family === 'ip' ? 'ipv4_addr' : 'ipv6_addr'}; size ${s.size ?? 65535}; flags dynamic; }`,
      `add rule inet ${table} input ${match} add @${set} { ${client} ct count over ${s.limit} } reject with tcp reset`,
      `add rule inet ${table} input ${match} ${client} != @${set} reject with tcp reset`,
    );
  }
  return lines;
}

/**
 * Which packets reach the gateway's listener (SBX_GATEWAY_HOST): none but local ones (loopback),
 * or those to one address of one family, or (a wildcard, or a name nft must not resolve) to any.
 */
export function gatewayAddress(host: string): 'loopback' | { family?: 'ip' | 'ip6'; address?: string } {
  if (host === 'localhost') return 'loopback';
  const v4 = isIPv6(host) ? /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(host)?.[1] : isIPv4(host) ? host : undefined;
  if (v4) return v4.startsWith('127.') ? 'loopback' : v4 === '0.0.0.0' ? {} : { family: 'ip', address: v4 };
  if (!isIPv6(host)) return {};
  const zeros = new URL(`http://[${host}]/`).hostname;
  if (zeros === '[::]') return {};
  if (zeros === '[::1]') return 'loopback';
  return { family: 'ip6', address: zeros.slice(1, -1) };
}

/**
 * The guard table's script. `keep`: the table's chain is rewritten, but its sets of clients (and
 * so the kernel's count of each client's open connections) stay: for a rewrite while the gateway
 * serves (new egress ports after a worker restart, rules put back after another program deleted a
 * table). Without it, the table is made anew (a gateway's start: what an earlier one left goes).
 */
export function guardScript(table: string, l: EgressListeners, sources?: SourceLimit, keep = false): string {
  const ports = `{ ${l.dns}, ${l.http}, ${l.tls} }`;
  const chain = `add chain inet ${table} input { type filter hook input priority -20; policy accept; }`;
  return [
    `add table inet ${table}`,
    ...(keep ? [chain, `flush chain inet ${table} input`] : [`delete table inet ${table}`, `add table inet ${table}`, chain]),
    `add rule inet ${table} input meta l4proto { tcp, udp } th dport ${ports} iifname "sbx-*" ct status dnat accept`,
    `add rule inet ${table} input meta l4proto { tcp, udp } th dport ${ports} ct direction reply accept`,
    `add rule inet ${table} input meta l4proto tcp th dport ${ports} reject with tcp reset`,
    `add rule inet ${table} input meta l4proto { tcp, udp } th dport ${ports} reject with icmpx type admin-prohibited`,
    ...sourceLimitRules(table, sources),
    '',
  ].join('\n');
}

/**
 * Puts the guard in force. `keep` (a rewrite while serving): the clients' counts stay (an existing
 * set is kept as it is; the kernel takes a new size for it). Should the kernel refuse that script,
 * the table is made anew, and `onFallback` says why (the counts start again).
 */
export async function applyListenerGuard(home: string, listeners: EgressListeners, sources?: SourceLimit, keep = false, onFallback: (why: string) => void = () => {}): Promise<void> {
  const withSize = sources && { ...sources, size: sources.size ?? conntrackMax() };
  const table = guardTable(home);
  if (keep) {
    const refused = await runNft(guardScript(table, listeners, withSize, true), 'could not rewrite the listener guard in place').then(() => undefined, (err: Error) => err.message);
    if (refused === undefined) return;
    onFallback(`${refused}: the guard is made anew (per-client connection counts start again)`);
  }
  return runNft(guardScript(table, listeners, withSize), 'could not guard the egress listeners');
}

/** How many connections conntrack tracks at most (at least 65,535). */
function conntrackMax(): number {
  try {
    return Math.max(65_535, Number(readFileSync('/proc/sys/net/netfilter/nf_conntrack_max', 'utf8')) || 0);
  } catch {
    return 65_535;
  }
}

export function removeListenerGuard(home: string): Promise<void> {
  const t = guardTable(home);
  return runNft(`add table inet ${t}\ndelete table inet ${t}\n`, 'could not remove the egress listener guard');
}
