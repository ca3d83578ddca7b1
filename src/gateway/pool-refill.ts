// The warm pool's background refill (src/api/pool.ts), in the daemon: once a second, and at once
// after a claim or `sbx pool set` (LocalSbx kicks it), the pool is topped up to its size. Only
// after the stale state of a crash was cleared (reconcile), so nothing is counted twice.
import type { LocalSbx } from '../api/local-sbx.ts';

export function startPoolRefill(sbx: LocalSbx, reconciled: Promise<void>, log: (line: string) => void, everyMs = 1000): () => void {
  sbx.pool.onLine = log;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  void reconciled.finally(() => {
    if (stopped) return;
    void sbx.refillPool();
    timer = setInterval(() => void sbx.refillPool(), everyMs);
  });
  return () => {
    stopped = true;
    if (timer) clearInterval(timer);
  };
}
