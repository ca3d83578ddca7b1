// Ports for the egress listeners that no unprivileged user can take: below 1024. Sandboxes' DNS and
// web traffic is redirected to them, so whoever listens there when the gateway is down (stopped,
// crashed, replaced) would receive it: with a privileged port that can only be root. Picked at
// random from a range real services rarely use, and retried when taken; a home's own first.
import { fnv1a } from '../net/nft-rules.ts';

export const LOW_PORT_MIN = 600;
export const LOW_PORT_MAX = 1023;

/** Candidate ports, random order, `count` of them. */
export function lowPortCandidates(count = 64, random: () => number = Math.random): number[] {
  const span = LOW_PORT_MAX - LOW_PORT_MIN + 1;
  const seen = new Set<number>();
  while (seen.size < Math.min(count, span)) seen.add(LOW_PORT_MIN + Math.floor(random() * span));
  return [...seen];
}

/**
 * The ports a home's listeners take when they are free: the same at every start. The kernel keeps
 * each redirected flow's translation (conntrack) for 30 s or more after its last packet, so a
 * resolver that reuses a source port within that time goes to the port of the gateway before:
 * with new ports at every start, DNS failed for that long after a restart.
 */
export function preferredLowPorts(home: string): { dns: number; http: number; tls: number } {
  const span = LOW_PORT_MAX - LOW_PORT_MIN + 1;
  const first = fnv1a(`sbx-listeners:${home}`) % span;
  const at = (i: number) => LOW_PORT_MIN + ((first + i * 7) % span);
  return { dns: at(0), http: at(1), tls: at(2) };
}

/** Binds with `prefer` if free, else the first candidate that is; `bind(0)` when privileged ports are not ours to take. */
export async function bindLowPort<T>(bind: (port: number) => Promise<T>, privileged: boolean, prefer?: number): Promise<T> {
  if (!privileged) return bind(0);
  let last: unknown;
  for (const port of [...(prefer !== undefined ? [prefer] : []), ...lowPortCandidates().filter((p) => p !== prefer)]) {
    try {
      return await bind(port);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EADDRINUSE' && code !== 'EACCES') throw err;
      last = err;
    }
  }
  throw last ?? new Error('no free port below 1024');
}
