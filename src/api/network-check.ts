// `sbx network check`: a dry run of one connection under a sandbox's policy, along the path its
// packets would take. A name is asked of sbx's DNS forwarder first (decideName), then resolved
// through sbx's own upstream; TCP 80/443 of a policy that names domains goes to the Host/SNI
// proxy (egress-judge.ts, the proxy's own decisions); everything else meets the kernel's rules
// (core/kernel-decision.ts). The same functions decide for real, so check and log agree.
import { isIP } from 'node:net';
import { UsageError } from '../core/errors.ts';
import { decideName, deniedNames, normalizeName, type CompiledPolicy } from '../core/network-policy.ts';
import { answerMayGive, kernelDecision } from '../core/kernel-decision.ts';
import type { NetworkVerdict } from '../core/network-log.ts';
import { judgeAddress, judgeName, parseHost, RULE, type Candidate } from '../gateway/egress-judge.ts';
import { canonicalAddress } from '../gateway/host-addresses.ts';
import { servesDns } from '../net/nft-rules.ts';

/** The rules send DNS to any of the host's addresses to sbx's forwarder (nft-rules.ts: dnat). */
export const FORWARDER_RULE = "default: sbx's DNS forwarder";
/** A sandbox made without --ipv6 has no IPv6 route. */
export const NO_IPV6_RULE = 'default: no IPv6 (the sandbox was created without --ipv6)';

export interface NetworkCheck {
  sandbox: string;
  /** DEST as given. */
  destination: string;
  protocol: 'tcp' | 'udp';
  port: number;
  name?: string;
  /** The address the decision was about (the one a connection would go to, when allowed). */
  address?: string;
  /** What the name resolved to through sbx's upstream. */
  addresses?: string[];
  /** Which part of sbx decides: its DNS forwarder, its Host/SNI proxy, or the kernel's rules. */
  path: 'dns' | 'proxy' | 'kernel';
  verdict: NetworkVerdict;
  rule: string;
}

/** Without a port, a check is for this one (HTTPS). */
export const DEFAULT_CHECK_PORT = 443;

/** DEST[:PORT]: a name, an IPv4 address, an IPv6 address (bare, or in brackets with a port). */
export function parseCheckDestination(text: string): { name?: string; address?: string; port: number } {
  const t = text.trim();
  const bad = () => new UsageError(`"${text}" is not a destination: use NAME, ADDRESS, NAME:PORT, ADDRESS:PORT or [IPV6]:PORT (port 1-65535)`);
  if (isIP(t) === 6) return { address: canonicalAddress(t) ?? t, port: DEFAULT_CHECK_PORT };
  if (/:\d*$/.test(t) && !/:\d{1,5}$/.test(t)) throw bad();
  const target = parseHost(t);
  if (!target || (!target.name && !target.address)) throw bad();
  return { ...(target.name ? { name: target.name } : {}), ...(target.address ? { address: target.address } : {}), port: target.port ?? DEFAULT_CHECK_PORT };
}

export interface CheckWorld {
  /** sbx's upstream resolver. */
  resolve(name: string): Promise<string[]>;
  isHost(address: string): boolean;
  isSandbox(address: string): boolean;
  /** The sandbox has IPv6 (create --ipv6). */
  ipv6?: boolean;
}

type Decided = Pick<NetworkCheck, 'path' | 'verdict' | 'rule' | 'address' | 'addresses'>;

const verdictOf = (allowed: boolean): NetworkVerdict => (allowed ? 'allowed' : 'blocked');

export async function checkConnection(p: CompiledPolicy, dest: { name?: string; address?: string; port: number; udp?: boolean }, world: CheckWorld): Promise<Decided> {
  const viaProxy = !dest.udp && (dest.port === 80 || dest.port === 443) && p.hasDomains;
  const classify = (a: string): Candidate => {
    const address = canonicalAddress(a) ?? a;
    const host = world.isHost(address);
    return { address, host, sandbox: !host && world.isSandbox(address) };
  };
  const kernel = (c: Candidate, name?: string) => kernelDecision(p, { address: c.address, port: dest.port, toHost: c.host, sandbox: c.sandbox, name });
  if (dest.address) {
    const c = classify(dest.address);
    if (isIP(c.address) === 6 && !world.ipv6) return { path: 'kernel', verdict: 'blocked', rule: NO_IPV6_RULE, address: c.address };
    if (c.host && dest.port === 53 && servesDns(p)) return { path: 'dns', verdict: 'allowed', rule: FORWARDER_RULE, address: c.address };
    if (viaProxy) {
      // As the proxy does: in allow-all, the addresses of denied names stay denied by address.
      const denied = p.mode === 'allow-all' && deniedNames(p).length > 0 ? new Set((await Promise.all(deniedNames(p).map((n) => world.resolve(n)))).flat().map((a) => canonicalAddress(a) ?? a)) : undefined;
      const v = judgeAddress(p, c, dest.port, denied);
      return { path: 'proxy', verdict: verdictOf(v.ok), rule: v.rule, address: c.address };
    }
    const d = kernel(c);
    return { path: 'kernel', verdict: verdictOf(d.allowed), rule: d.rule, address: c.address };
  }
  const name = normalizeName(dest.name!);
  const asked = decideName(p, name);
  if (!asked.allowed) return { path: 'dns', verdict: 'blocked', rule: asked.rule };
  const addresses = await world.resolve(name);
  const candidates = addresses.map(classify);
  if (viaProxy) {
    const v = judgeName(p, name, dest.port, candidates);
    return { path: 'proxy', verdict: verdictOf(v.ok), rule: v.rule, addresses, ...(v.ok ? { address: v.address } : {}) };
  }
  // The kernel sees only the addresses the forwarder gave the sandbox (and no IPv6 without --ipv6).
  const given = candidates.filter((c) => answerMayGive(p, c.address, c) && (world.ipv6 || isIP(c.address) !== 6));
  if (given.length === 0) {
    const first = candidates[0];
    return { path: first ? 'dns' : 'kernel', verdict: 'blocked', rule: first ? kernel(first).rule : RULE.unresolved, addresses };
  }
  const decided = given.map((c) => ({ c, d: kernel(c, name) }));
  const pick = decided.find((x) => x.d.allowed) ?? decided[0]!;
  return { path: 'kernel', verdict: verdictOf(pick.d.allowed), rule: pick.d.rule, address: pick.c.address, addresses };
}
