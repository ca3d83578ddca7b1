// What the kernel's rules decide for one new connection out of a sandbox (nft-rules.ts), in the
// words of the policy: the same decision as decideConnection, with the two things only the kernel
// path has. Pure. Used by the network log (a kernel entry's rule) and by `network check`.
import { addressAllowed, decideConnection, hostAllowed, inRanges, isProtectedAddress, learnedPorts, type CompiledPolicy, type Verdict } from './network-policy.ts';

/** Another sandbox's address: the kernel refuses it before any policy entry. */
export const SANDBOX_RULE = 'default: sandbox address';

export interface KernelConnection {
  address: string;
  port?: number;
  /** The packet goes to one of the host's own addresses (the input hook). */
  toHost?: boolean;
  /** The address is another sandbox's. */
  sandbox?: boolean;
  /** A name whose DNS answer gave the sandbox this address (sbx's forwarder), if one did. */
  name?: string;
}

/**
 * - Sandboxes never reach each other, whatever the entries.
 * - A name opens an address in the kernel only through a `name:port` entry (learned from the DNS
 *   answer, for exactly those ports); plain names are judged by the proxy on TCP 80/443, so here
 *   the name counts only when such an entry covers the port.
 */
export function kernelDecision(p: CompiledPolicy, c: KernelConnection): Verdict {
  if (c.sandbox && !c.toHost) return { allowed: false, rule: SANDBOX_RULE };
  const learned = c.name && c.port !== undefined && inRanges(learnedPorts(p, c.name), c.port);
  // A packet without ports (ICMP) to the host: the rules let only a bare `host` entry open it, so
  // it is judged as a port no `host:PORT` entry names.
  const port = c.port ?? (c.toHost ? 0 : undefined);
  return decideConnection(p, { address: c.address, port, toHost: c.toHost, ...(learned ? { name: c.name } : {}) });
}

/**
 * Whether sbx's DNS forwarder may give the sandbox this address in an answer: an address entry
 * opens it; else no protected address, the host's own only to `host` entries, no sandbox's.
 */
export function answerMayGive(p: CompiledPolicy, address: string, where: { host: boolean; sandbox: boolean }): boolean {
  if (addressAllowed(p, address)) return true;
  if (isProtectedAddress(address)) return false;
  if (where.host) return hostAllowed(p);
  return !where.sandbox;
}
