// The gateway's egress listeners (DNS forwarder, HTTP and TLS proxy) bind every host address, but
// only sandboxes may use them, and only by the kernel's redirect from their own bridge. One small
// table per gateway refuses everything else on those ports: the LAN, local users, and a sandbox
// that connects to the listener's port directly.
import { createHash } from 'node:crypto';
import type { EgressListeners } from './nft-rules.ts';
import { runNft } from './nft.ts';

/** One table per SBX_HOME, so a restarted gateway replaces what a crashed one left. */
export const guardTable = (home: string) => `sbxgw_${createHash('sha256').update(home).digest('hex').slice(0, 12)}`;

export function guardScript(table: string, l: EgressListeners): string {
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
    '',
  ].join('\n');
}

export function applyListenerGuard(home: string, listeners: EgressListeners): Promise<void> {
  return runNft(guardScript(guardTable(home), listeners), 'could not guard the egress listeners');
}

export function removeListenerGuard(home: string): Promise<void> {
  const t = guardTable(home);
  return runNft(`add table inet ${t}\ndelete table inet ${t}\n`, 'could not remove the egress listener guard');
}
