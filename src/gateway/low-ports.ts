// Ports for the egress listeners that no unprivileged user can take: below 1024. Sandboxes' DNS and
// web traffic is redirected to them, so whoever listens there when the gateway is down (stopped,
// crashed, replaced) would receive it: with a privileged port that can only be root. Picked at
// random from a range real services rarely use, and retried when taken.
export const LOW_PORT_MIN = 600;
export const LOW_PORT_MAX = 1023;

/** Candidate ports, random order, `count` of them. */
export function lowPortCandidates(count = 64, random: () => number = Math.random): number[] {
  const span = LOW_PORT_MAX - LOW_PORT_MIN + 1;
  const seen = new Set<number>();
  while (seen.size < Math.min(count, span)) seen.add(LOW_PORT_MIN + Math.floor(random() * span));
  return [...seen];
}

/** Binds with the first candidate that is free; `bind(0)` when privileged ports are not ours to take. */
export async function bindLowPort<T>(bind: (port: number) => Promise<T>, privileged: boolean): Promise<T> {
  if (!privileged) return bind(0);
  let last: unknown;
  for (const port of lowPortCandidates()) {
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
