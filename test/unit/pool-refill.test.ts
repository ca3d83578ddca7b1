// The warm pool's refill timing: quiet for a while after a claim (the claiming command is still
// printing and exiting), then a refill; nothing once the gateway stops.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Store } from '../../src/store/store.ts';
import { WarmPool } from '../../src/api/pool.ts';
import { startPoolRefill } from '../../src/gateway/pool-refill.ts';
import { REFILL_AFTER_CLAIM_MS } from '../../src/core/pool.ts';
import type { SandboxRecord } from '../../src/core/sandbox.ts';

const ready = (id: string) => ({ id, createdAt: new Date().toISOString(), state: 'ready' as const });
const draft = (name: string) => ({ id: '', name, image: 'sbx/base:bookworm', createdAt: new Date().toISOString(), command: [], env: {}, desired: 'running' }) as unknown as SandboxRecord;

test('WarmPool: no refill starts in the quiet time after a claim while a ready sandbox is left; an emptied pool refills at once', async () => {
  const home = mkdtempSync(join(tmpdir(), 'sbx-pool-quiet-'));
  try {
    const store = new Store(home);
    await store.update((d) => void (d.pool = { size: 3, entries: { a1: ready('a1'), b2: ready('b2') } }));
    const pool = new WarmPool(store, 'sbx/base:bookworm');
    const quiet: number[] = [];
    pool.onClaimed = (ms) => quiet.push(ms);
    let started = 0;
    const ctx = () => {
      started++;
      return Promise.reject(new Error('stop here: the refill started'));
    };
    assert.ok(await pool.take(draft('one'), new Set()));
    assert.deepEqual(quiet, [REFILL_AFTER_CLAIM_MS]);
    await pool.fill(ctx).catch(() => {});
    assert.equal(started, 0, 'one ready sandbox left: the refill waits');
    assert.ok(await pool.take(draft('two'), new Set()));
    await pool.fill(ctx).catch(() => {});
    assert.equal(started, 1, 'nothing left to claim: the refill starts at once');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('startPoolRefill: a claim kicks a refill after the quiet time, only once reconciled, never after stop', async () => {
  let refills = 0;
  const pool = { onLine: (_: string) => {}, onClaimed: (_ms: number) => {} };
  const sbx = { pool, refillPool: async () => void refills++ } as never;
  let reconcile!: () => void;
  const reconciled = new Promise<void>((r) => (reconcile = r));
  const stop = startPoolRefill(sbx, reconciled, () => {}, 60_000);
  try {
    pool.onClaimed(10);
    await sleep(60);
    assert.equal(refills, 0, 'not before the start-up reconcile');
    reconcile();
    await sleep(5);
    assert.equal(refills, 1, 'the refill at start');
    pool.onClaimed(10);
    assert.equal(refills, 1, 'not at once');
    await sleep(60);
    assert.equal(refills, 2, 'after the quiet time');
    pool.onClaimed(10);
    stop();
    await sleep(60);
    assert.equal(refills, 2, 'a kick pending at stop never runs');
  } finally {
    stop();
  }
});
