// The gateway's egress listeners (DNS forwarder, HTTP and TLS proxy) bind every host address, but
// only sandboxes may use them, and only by the kernel's redirect from their own bridge. One small
// table per gateway refuses everything else on those ports: the LAN, local users, and a sandbox
// that connects to the listener's port directly. The same table keeps the gateway port's limit per
// client address (SBX_GATEWAY_SOURCE_LIMIT), whichever engine serves the port.
import { createHash } from 'node:crypto';
import type { EgressListeners } from './nft-rules.ts';
import { runNft } from './nft.ts';

/** One table per SBX_HOME, so a restarted gateway replaces what a crashed one left. */
export const guardTable = (home: string) => `sbxgw_${createHash('sha256').update(home).digest('hex').slice(0, 12)}`;

/** The gateway port and how many connections one client address may hold on it at once (0: no limit). */
export interface SourceLimit {
  port: number;
  limit: number;
}

/**
 * New connections to the gateway port past `limit` from one address are reset at the SYN, in the
 * kernel (conntrack counts the open ones): one client cannot take every connection the gateway's
 * nginx, HAProxy or Node can hold. Local clients (on `lo`: the host's loopback and its own
 * addresses) are not counted.
 */
function sourceLimitRules(table: string, s: SourceLimit | undefined): string[] {
  if (!s?.limit) return [];
  const rule = (family: 'ip' | 'ip6', set: string) =>
    `add rule inet ${table} input tcp dport ${s.port} iif != lo ct state new add @${set} { ${family} saddr ct count over ${s.limit} } reject with tcp reset`;
  return [
    `add set inet ${table} sources4 { type ipv4_addr; size 65535; flags dynamic; }`,
    `add set inet ${table} sources6 { type ipv6_addr; size 65535; flags dynamic; }`,
    rule('ip', 'sources4'),
    rule('ip6', 'sources6'),
  ];
}

export function guardScript(table: string, l: EgressListeners, sources?: SourceLimit): string {
  const ports = `{ ${l.dns}, ${l.http}, ${l.tls} }`;
  return [
    `add table inet ${table}`,
    `delete table inet ${table}`,
    `add table inet ${table}`,
    `add chain inet ${table} input { type filter hook input priority -20; policy accept; }`,
    `add rule inet ${table} input meta l4proto { tcp, udp } th dport ${ports} iifname "sbx-*" ct status dnat accept`,
    `add rule inet ${table} input meta l4proto { tcp, udp } th dport ${ports} ct direction reply accept`,
    `add rule inet ${table} input meta l4proto tcp th dport ${ports} reject with tcp reset`,
    `add rule inet ${table} input meta l4proto { tcp, udp } th dport ${ports} reject with icmpx type admin-prohibited`,
    ...sourceLimitRules(table, sources),
    '',
  ].join('\n');
}

export function applyListenerGuard(home: string, listeners: EgressListeners, sources?: SourceLimit): Promise<void> {
  return runNft(guardScript(guardTable(home), listeners, sources), 'could not guard the egress listeners');
}

export function removeListenerGuard(home: string): Promise<void> {
  const t = guardTable(home);
  return runNft(`add table inet ${t}\ndelete table inet ${t}\n`, 'could not remove the egress listener guard');
}
