// The warm pool's background refill (src/api/pool.ts), in the daemon: the pool is topped up to its
// size once a second, just after the quiet time that follows a claim (REFILL_AFTER_CLAIM_MS), and
// at once after `sbx pool set` (LocalSbx). Only after the stale state of a crash was cleared
// (reconcile), so nothing is counted twice; nothing starts once the gateway stops.
import type { LocalSbx } from '../api/local-sbx.ts';

export function startPoolRefill(sbx: LocalSbx, reconciled: Promise<void>, log: (line: string) => void, everyMs = 1000): () => void {
  sbx.pool.onLine = log;
  let timer: NodeJS.Timeout | undefined;
  let kick: NodeJS.Timeout | undefined;
  let running = false;
  let stopped = false;
  // A little after the quiet time: a timer may fire a few ms before performance.now() says it ended.
  sbx.pool.onClaimed = (quietMs) => {
    if (!running || stopped) return;
    clearTimeout(kick);
    kick = setTimeout(() => void sbx.refillPool(), quietMs + 20);
  };
  void reconciled.finally(() => {
    if (stopped) return;
    running = true;
    void sbx.refillPool();
    timer = setInterval(() => void sbx.refillPool(), everyMs);
  });
  return () => {
    stopped = true;
    if (timer) clearInterval(timer);
    clearTimeout(kick);
  };
}
