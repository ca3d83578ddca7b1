// The warm pool's pure rules (src/core/pool.ts): sizes, claimable shapes, refill and trim counts.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parsePoolSize, pickReady, poolStatus, refillCount, surplus, unclaimableReason, type PoolData, type PoolEntry } from '../../src/core/pool.ts';
import { UsageError } from '../../src/core/errors.ts';

const entry = (id: string, state: PoolEntry['state'], at = id): PoolEntry => ({ id, createdAt: `2026-01-01T00:00:0${at}Z`, state });
const pool = (size: number, ...entries: PoolEntry[]): PoolData => ({ size, entries: Object.fromEntries(entries.map((e) => [e.id, e])) });

describe('parsePoolSize', () => {
  for (const ok of [['0', 0], ['3', 3], [' 64 ', 64], [5, 5]] as const) {
    it(`accepts ${JSON.stringify(ok[0])}`, () => assert.equal(parsePoolSize(ok[0]), ok[1]));
  }
  for (const bad of ['-1', 'x', '1.5', '', '65', '1e2', '0x3']) {
    it(`refuses ${JSON.stringify(bad)} naming what is accepted`, () => {
      assert.throws(() => parsePoolSize(bad), (err: Error) => err instanceof UsageError && /whole number from 0 \(off\) to 64/.test(err.message));
    });
  }
});

describe('unclaimableReason', () => {
  const D = 'sbx/base:bookworm';
  const cases: Array<[string, Parameters<typeof unclaimableReason>[0], string | undefined]> = [
    ['the common shape', {}, undefined],
    ['the default image named', { image: D, command: [] }, undefined],
    ['another image', { image: 'alpine' }, 'another image'],
    ['a main command', { command: ['sleep', '1'] }, 'a main command'],
    ['IPv6', { ipv6: true }, 'IPv6'],
  ];
  for (const [what, shape, why] of cases) it(what, () => assert.equal(unclaimableReason(shape, D), why));
});

describe('counts', () => {
  it('refills the shortfall, at most `parallel` at once, not counting removals', () => {
    assert.equal(refillCount(pool(3), 2), 2);
    assert.equal(refillCount(pool(3, entry('1', 'ready'), entry('2', 'removing')), 2), 2);
    assert.equal(refillCount(pool(3, entry('1', 'ready'), entry('2', 'creating')), 2), 1);
    assert.equal(refillCount(pool(1, entry('1', 'ready'), entry('2', 'ready')), 2), 0);
  });
  it('trims ready entries beyond the size, oldest first; creating ones are left to finish', () => {
    assert.deepEqual(surplus(pool(1, entry('1', 'ready'), entry('2', 'ready'), entry('3', 'creating'))).map((e) => e.id), ['1', '2']);
    assert.deepEqual(surplus(pool(0, entry('3', 'creating'))), []);
    assert.deepEqual(surplus(pool(2, entry('1', 'ready'), entry('2', 'ready'))), []);
  });
  it('claims the oldest ready entry, skipping those tried', () => {
    const p = pool(3, entry('2', 'ready'), entry('1', 'creating'), entry('3', 'ready'));
    assert.equal(pickReady(p)?.id, '2');
    assert.equal(pickReady(p, new Set(['2']))?.id, '3');
    assert.equal(pickReady(p, new Set(['2', '3'])), undefined);
  });
  it('status counts each state', () => {
    assert.deepEqual(poolStatus(pool(3, entry('1', 'ready'), entry('2', 'creating'), entry('3', 'removing'))), { size: 3, ready: 1, creating: 1, removing: 1, ids: ['1', '2', '3'] });
  });
});
