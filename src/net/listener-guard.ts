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

/** The gateway's address and port, and how many connections one client may hold on it at once (0: no limit). */
export interface SourceLimit {
  host: string;
  port: number;
  limit: number;
  /** Addresses the kernel keeps counts for at once (one per client; IPv6 clients by /64). */
  size?: number;
}

/** IPv6 clients are counted by /64: a client usually holds a whole one. */
const IPV6_CLIENT = 'ip6 saddr and ffff:ffff:ffff:ffff::';

/**
 * New connections to the gateway port past `limit` from one client are reset at the SYN, in the
 * kernel (conntrack counts the open ones): one client cannot take every connection the gateway's
 * nginx, HAProxy or Node can hold. Local clients (on `lo`: the host's loopback and its own
 * addresses) are not counted, so a gateway on loopback needs no rule. When the table of clients is
 * full (a flood of spoofed SYNs, say), a client not in it is refused, not let through uncounted.
 */
function sourceLimitRules(table: string, s: SourceLimit | undefined): string[] {
  if (!s?.limit || /^(127\.|::1$|localhost$)/.test(s.host)) return [];
  const wildcard = s.host === '0.0.0.0' || s.host === '::';
  const v6 = s.host.includes(':');
  const families: Array<['ip' | 'ip6', string, string]> = [];
  if (wildcard || !v6) families.push(['ip', 'sources4', 'ip saddr']);
  if (wildcard || v6) families.push(['ip6', 'sources6', IPV6_CLIENT]);
  const lines: string[] = [];
  for (const [family, set, client] of families) {
    const to = `tcp dport ${s.port}${wildcard ? '' : ` ${family} daddr ${s.host}`} iif != lo ct state new`;
    lines.push(
      `add set inet ${table} ${set} { type ${family === 'ip' ? 'ipv4_addr' : 'ipv6_addr'}; size ${s.size ?? 65535}; flags dynamic; }`,
      `add rule inet ${table} input ${to} add @${set} { ${client} ct count over ${s.limit} } reject with tcp reset`,
      `add rule inet ${table} input ${to} ${client} != @${set} reject with tcp reset`,
    );
  }
  return lines;
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
