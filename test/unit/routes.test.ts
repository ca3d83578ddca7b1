// The gateway's route table: no store read when requests look sandboxes up; a refresh uses the
// store's snapshot, and a file already in hand is not parsed again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RouteTable } from '../../src/gateway/routes.ts';
import { Store } from '../../src/store/store.ts';
import type { SandboxRecord } from '../../src/core/sandbox.ts';

const rec = (id: string, name: string) => ({ id, name, createdAt: new Date().toISOString(), image: 'x', command: [], env: {}, desired: 'running' }) as unknown as SandboxRecord;

function withHome(run: (store: Store, other: Store) => Promise<void>) {
  return async () => {
    const home = mkdtempSync(join(tmpdir(), 'sbx-routes-'));
    try {
      // `other` stands for another sbx process writing the same store.
      await run(new Store(home), new Store(home));
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  };
}

test('RouteTable: lookups never read the store; refresh() picks up another process\'s write', withHome(async (store, other) => {
  await other.update((d) => void (d.sandboxes.a1 = rec('a1', 'web')));
  let snapshots = 0;
  const counting = { path: store.path, signature: () => store.signature(), snapshot: () => (snapshots++, store.snapshot()) };
  const routes = new RouteTable(counting);
  try {
    assert.equal(snapshots, 1, 'read once when the table is made');
    for (let i = 0; i < 100; i++) assert.equal(routes.find('web')?.id, 'a1');
    routes.all();
    assert.equal(snapshots, 1, 'no read on lookups');
    await other.update((d) => void (d.sandboxes.b2 = rec('b2', 'api')));
    await routes.refresh();
    assert.equal(routes.find('api')?.id, 'b2');
    assert.equal(routes.find('web')?.id, 'a1');
  } finally {
    routes.close();
  }
}));

test('RouteTable: the same generation keeps the records in hand; a new one, or a file written by hand, replaces them', withHome(async (store, other) => {
  await other.update((d) => void (d.sandboxes.a1 = rec('a1', 'web')));
  const routes = new RouteTable(store);
  try {
    const first = routes.find('web');
    await routes.refresh();
    assert.equal(routes.find('web'), first, 'same generation: not parsed again');
    await other.update((d) => void (d.sandboxes.a1!.env = { A: '1' }));
    await routes.refresh();
    assert.deepEqual(routes.find('web')?.env, { A: '1' }, 'a new generation is read');
    // A file without a generation (an older sbx, or by hand) is read too.
    writeFileSync(store.path, JSON.stringify({ version: 1, sandboxes: { c3: rec('c3', 'db') } }));
    await routes.refresh();
    assert.equal(routes.find('db')?.id, 'c3');
    assert.equal(routes.find('web'), undefined);
    assert.equal(routes.findOrRead('db')?.id, 'c3');
  } finally {
    routes.close();
  }
}));
