// The gateway's side of `sbx network log`: the book of entries, fed by the egress worker and by
// the kernel. Each sandbox's rules log the first packet of every connection they let through or
// refuse, rate-limited per sandbox, to this home's nflog group (nft-rules.ts: `log`); the gateway
// reads the group (net/nflog.ts) and names the rule with the same decision the rules were made
// from (core/kernel-decision.ts). SBX_NETWORK_LOG=0 turns the kernel's part off (no log rules).
import { realpathSync } from 'node:fs';
import type { CompiledPolicy } from '../core/network-policy.ts';
import { RateGate, type NetworkLogEntry } from '../core/network-log.ts';
import { kernelDecision } from '../core/kernel-decision.ts';
import { NetworkLogBook, checkedEntry } from './network-log-book.ts';
import { isId } from './egress-ipc.ts';
import type { NflogPacket } from '../net/nflog.ts';
import { fnv1a } from '../net/nft-rules.ts';

/** nft-rules.ts: logPrefix. */
const PREFIX = /^sbx:([a-z0-9]{1,64}):([ar])$/;

/** This home's nflog group: the same from every process that writes its sandboxes' rules. */
export function logGroupOf(home: string): number {
  let path = home;
  try {
    path = realpathSync(home);
  } catch {}
  return 20_000 + (fnv1a(path) % 40_000);
}

export interface NetworkLogOptions {
  home: string;
  /** A sandbox's policy as judged now, from memory (undefined: not a sandbox of this home). */
  policyOf(id: string): CompiledPolicy | undefined;
  isSandbox(address: string): boolean;
  log(line: string): void;
}

export interface NetworkLogService {
  readonly book: NetworkLogBook;
  /** False with SBX_NETWORK_LOG=0: nothing is logged, by the kernel or the egress worker. */
  readonly enabled: boolean;
  /** The nflog group the rules log to; undefined: the kernel's part is off (`why`). */
  readonly group?: number;
  readonly why?: string;
  /** A batch of the egress worker's entries (checked here). */
  fromWorker(events: unknown): void;
  describe(): string;
  close(): void;
}

/** What a network log service records, for `sbx gateway status`. */
export function describeNetworkLog(s: Pick<NetworkLogService, 'enabled' | 'group' | 'why'>): string {
  if (!s.enabled) return `off (${s.why})`;
  return s.group !== undefined ? `kernel, dns, proxy (nflog group ${s.group})` : `dns, proxy (no kernel entries: ${s.why})`;
}

export async function startNetworkLog(o: NetworkLogOptions): Promise<NetworkLogService> {
  const book = new NetworkLogBook();
  // A second guard behind the kernel's own limit: one sandbox's flood never fills the others' time.
  const gate = new RateGate();
  // The worker's entries get their own (it parses what sandboxes send: its word is not trusted).
  const workerGate = new RateGate();
  const fromWorker = (events: unknown) => {
    if (!Array.isArray(events)) return;
    for (const ev of events.slice(0, 10_000) as Array<{ id?: unknown; entry?: unknown }>) {
      if (!isId(ev?.id) || !o.policyOf(ev.id) || !workerGate.take(ev.id)) continue;
      const entry = checkedEntry(ev.entry);
      if (entry) book.add(ev.id, entry);
    }
  };
  const onPacket = (p: NflogPacket) => {
    const m = PREFIX.exec(p.prefix);
    const id = m?.[1];
    const policy = id ? o.policyOf(id) : undefined;
    if (!id || !policy || !gate.take(id)) return;
    book.add(id, kernelEntry(p, m![2] === 'a', policy, book.nameOf(id, p.destination), o));
  };
  const done = (status: { enabled: boolean; group?: number; why?: string }, close = () => {}): NetworkLogService => ({ book, ...status, fromWorker, describe: () => describeNetworkLog(status), close });
  if (process.env.SBX_NETWORK_LOG === '0') return done({ enabled: false, why: 'SBX_NETWORK_LOG=0' });
  if (process.getuid?.() !== 0) return done({ enabled: true, why: 'the gateway does not run as root' });
  const group = logGroupOf(o.home);
  const { openNflog } = await import('../net/nflog.ts');
  // A gateway that just stopped lets go of the group within about 500 ms (its reader's receive
  // timeout): a bind refused meanwhile is tried again.
  let reader = await openNflog(group, onPacket, (err) => o.log(`network log: the kernel's entries stopped: ${err.message}`));
  for (let i = 0; i < 6 && 'why' in reader && /EPERM/.test(reader.why); i++) {
    await new Promise((r) => setTimeout(r, 250));
    reader = await openNflog(group, onPacket, (err) => o.log(`network log: the kernel's entries stopped: ${err.message}`));
  }
  if ('why' in reader) {
    o.log(`network log: no kernel entries: ${reader.why}`);
    return done({ enabled: true, why: reader.why });
  }
  o.log(`network log: kernel entries from nflog group ${group}`);
  return done({ enabled: true, group }, () => reader.close());
}

/** A kernel packet as an entry: the verdict is the kernel's, the rule the decision's that matches it. */
export function kernelEntry(p: NflogPacket, allowed: boolean, policy: CompiledPolicy, name: string | undefined, o: Pick<NetworkLogOptions, 'isSandbox'>): NetworkLogEntry {
  const toHost = p.hook === 1; // NF_INET_LOCAL_IN: one of the host's own addresses
  const d = kernelDecision(policy, { address: p.destination, port: p.destinationPort, toHost, sandbox: !toHost && o.isSandbox(p.destination), name });
  return {
    time: p.time.toISOString(),
    source: 'kernel',
    protocol: p.protocol,
    address: p.destination,
    ...(p.destinationPort !== undefined ? { port: p.destinationPort } : {}),
    ...(name ? { name } : {}),
    verdict: allowed ? 'allowed' : 'blocked',
    // The rules were made from the policy judged now, unless it changed since the packet.
    rule: d.allowed === allowed ? d.rule : `${d.rule} (the policy changed since)`,
  };
}
