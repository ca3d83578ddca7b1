// The watch on sbx's nft tables (src/net/table-watch.ts) against the real `nft monitor`, in a
// network namespace of the test's own (SBX_NFT runs nft there), and the kernel gate.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchTables } from '../../src/net/table-watch.ts';
import { KernelGate } from '../../src/net/kernel-gate.ts';

const root = process.getuid?.() === 0 && spawnSync('nft', ['--version']).status === 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('watchTables', { skip: !root && 'needs root and nft' }, () => {
  const ns = `sbxwatch${process.pid}`;
  const dir = mkdtempSync(join(tmpdir(), 'sbx-watch-'));
  const nft = (script: string) => execFileSync('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], { input: script });
  let saved: string | undefined;
  before(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    writeFileSync(join(dir, 'nft'), `#!/bin/sh\nexec ip netns exec ${ns} nft "$@"\n`);
    chmodSync(join(dir, 'nft'), 0o755);
    saved = process.env.SBX_NFT;
    process.env.SBX_NFT = join(dir, 'nft');
    nft('add table inet sbx\nadd table inet guard\n');
  });
  after(() => {
    if (saved === undefined) delete process.env.SBX_NFT;
    else process.env.SBX_NFT = saved;
    spawnSync('ip', ['netns', 'del', ns]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('reports a deleted table, even one re-created at once; not a table its owner replaced in one transaction', async () => {
    const deleted: string[] = [];
    const watch = watchTables({ 'inet sbx': 'always', 'inet guard': 'if-absent' }, (t) => deleted.push(t), () => {});
    try {
      await sleep(500); // the monitor listens
      assert.deepEqual(deleted, [], 'nothing at the start: both are there');
      nft('add table inet guard\ndelete table inet guard\nadd table inet guard\n'); // as sbx's listener guard does
      await sleep(300);
      assert.deepEqual(deleted, [], 'the guard replaced in one transaction is not a deletion');
      nft('delete table inet sbx\n');
      nft('add table inet sbx\n'); // another writer re-creates it at once, empty
      await sleep(300);
      assert.deepEqual(deleted, ['inet sbx'], 'a deletion of the shared table counts, even re-created');
      nft('delete table inet guard\n');
      await sleep(300);
      assert.deepEqual(deleted, ['inet sbx', 'inet guard']);
      nft('add table inet guard\nadd table inet other\n');
      nft('delete table inet other\n');
      await sleep(300);
      assert.deepEqual(deleted, ['inet sbx', 'inet guard'], 'other tables are not watched');
    } finally {
      watch.stop();
    }
    await sleep(200);
    assert.equal(spawnSync('pgrep', ['-f', `netns exec ${ns} nft monitor`]).status, 1, 'the monitor is gone');
  });
});

describe('KernelGate', () => {
  it('a run alone waits for the steps under way, and new steps wait for it', async () => {
    const gate = new KernelGate();
    const order: string[] = [];
    const step = async (name: string, ms: number) => {
      await gate.enter();
      order.push(`${name} begins`);
      await sleep(ms);
      order.push(`${name} ends`);
      gate.leave();
    };
    const a = step('a', 50);
    await sleep(5);
    const run = gate.alone(async () => {
      order.push('run begins');
      await sleep(50);
      order.push('run ends');
    });
    await sleep(5);
    const b = step('b', 10);
    await Promise.all([a, run, b]);
    assert.deepEqual(order, ['a begins', 'a ends', 'run begins', 'run ends', 'b begins', 'b ends']);
  });
});
