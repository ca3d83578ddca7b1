// The warm pool's background refill (src/api/pool.ts), in the daemon: the pool is topped up to its
// size once a second, 300 ms after a claim (REFILL_AFTER_CLAIM_MS) and at once after `sbx pool
// set` (LocalSbx kicks both). Only after the stale state of a crash was cleared (reconcile), so
// nothing is counted twice.
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
