// Telling a stale record (its process is gone) from one a live process works on.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { claimStale, recordState } from '../../src/api/reconcile.ts';
import { processAlive, processStart, thisProcess } from '../../src/store/process-ref.ts';
import { resolveSandbox } from '../../src/core/resolve.ts';
import type { SandboxRecord } from '../../src/core/sandbox.ts';

const base: SandboxRecord = { id: 'abc1234567', name: 'x', image: 'i', createdAt: new Date().toISOString(), command: [], env: {}, memory: 0, cpus: 0, desired: 'running' };
// A pid that existed and is gone: a child that has exited and been waited for.
const deadPid = spawnSync('true').pid!;

describe('process references', () => {
  it('this process is alive, with its start time', () => {
    const me = thisProcess();
    assert.equal(me.pid, process.pid);
    assert.ok(me.start, 'Linux gives a start time');
    assert.equal(processAlive(me), true);
  });
  it('a process that exited is not', () => assert.equal(processAlive({ pid: deadPid, start: '1' }), false));
  it('a live pid with another start time (the pid was reused) is not', () =>
    assert.equal(processAlive({ pid: process.pid, start: String(Number(processStart(process.pid)) - 1) }), false));
});

describe('record states', () => {
  const me = thisProcess();
  const gone = { pid: deadPid, start: '1' };
  const cases: Array<[string, Partial<SandboxRecord>, string]> = [
    ['a sandbox', {}, 'ready'],
    ['a create whose process runs', { creating: true, creator: me }, 'creating'],
    ['a create whose process is gone', { creating: true, creator: gone }, 'stale'],
    ['a create of an older sbx (no creator), recent', { creating: true }, 'creating'],
    ['a create of an older sbx, an hour old', { creating: true, createdAt: new Date(Date.now() - 3600_000).toISOString() }, 'stale'],
    ['a removal under way', { removing: { since: '', by: me } }, 'removing'],
    ['a removal whose process is gone', { removing: { since: '', by: gone } }, 'stale'],
    ['a removal that gave up with objects left', { removing: { since: '', left: ['network sbx-abc1234567'], error: 'busy' } }, 'stale'],
    ['a rollback under way (creating and removing)', { creating: true, creator: me, removing: { since: '', by: me } }, 'removing'],
  ];
  for (const [what, fields, state] of cases) it(`${what}: ${state}`, () => assert.equal(recordState({ ...base, ...fields }), state));

  it('claiming marks only stale records, keeping what is left', () => {
    const stale: SandboxRecord = { ...base, removing: { since: 't0', left: ['network n'], error: 'e' } };
    assert.equal(claimStale(stale), true);
    assert.deepEqual(stale.removing, { since: 't0', left: ['network n'], error: 'e', by: me });
    assert.equal(recordState(stale), 'removing');
    assert.equal(claimStale(stale), false, 'claimed once');
    assert.equal(claimStale({ ...base }), false);
  });

  it('a name held by a sandbox and by what a failed create left resolves to the sandbox', () => {
    const left: SandboxRecord = { ...base, id: 'left000000', createdAt: '1', removing: { since: '', left: ['network n'] } };
    const live: SandboxRecord = { ...base, id: 'live000000', createdAt: '2' };
    assert.equal(resolveSandbox('x', [left, live]).id, 'live000000');
    assert.equal(resolveSandbox('left000000', [left, live]).id, 'left000000');
    assert.equal(resolveSandbox('x', [left]).id, 'left000000');
  });
});
