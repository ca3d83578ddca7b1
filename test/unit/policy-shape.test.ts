import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePolicy } from '../../src/core/network-policy.ts';

describe('policy shape (a malformed policy is never read as allow-all)', () => {
  it('refuses what is not an object of known keys and lists', () => {
    for (const bad of ['block-all', null, [], 5, { mode: 'block-all', deny_out: ['x.com'] }, { mode: 1 }, { allowOut: 'x.com' }, { denyPorts: [{}] }] as unknown[]) {
      assert.throws(() => normalizePolicy(bad as never), (e: Error & { exitCode?: number }) => e.exitCode === 2, JSON.stringify(bad));
    }
    assert.throws(() => normalizePolicy({ mode: 'block-all', deny_out: ['x'] } as never), /unknown network policy field "deny_out": accepted: mode, allowOut, denyOut, allowPorts, denyPorts/);
  });
  it('control: the empty object and undefined are the default', () => {
    assert.equal(normalizePolicy({}).mode, 'allow-all');
    assert.equal(normalizePolicy(undefined).mode, 'allow-all');
  });
});
