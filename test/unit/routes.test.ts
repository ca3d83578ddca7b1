// The gateway's route table: no synchronous store read when requests look sandboxes up.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RouteTable } from '../../src/gateway/routes.ts';

test('RouteTable: lookups never read the store; refresh() reads it in the background', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-routes-'));
  const path = join(dir, 'state.json');
  const rec = (id: string, name: string) => ({ id, name, createdAt: new Date().toISOString(), image: 'x', command: [], env: {}, desired: 'running' });
  writeFileSync(path, JSON.stringify({ version: 1, sandboxes: { a1: rec('a1', 'web') } }));
  let syncReads = 0;
  const store = { path, sandboxes: () => (syncReads++, [rec('a1', 'web')]), signature: () => 'same' };
  const routes = new RouteTable(store as never);
  try {
    assert.equal(syncReads, 1, 'read once when the table is made');
    routes.invalidate();
    for (let i = 0; i < 100; i++) assert.equal(routes.find('web')?.id, 'a1');
    routes.all();
    assert.equal(syncReads, 1, 'no synchronous read on lookups');
    writeFileSync(path, JSON.stringify({ version: 1, sandboxes: { a1: rec('a1', 'web'), b2: rec('b2', 'api') } }));
    await routes.refresh();
    assert.equal(routes.find('api')?.id, 'b2');
    assert.equal(syncReads, 1);
  } finally {
    routes.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('RouteTable: a read that finds the text it parsed last keeps what it has; a changed text is used, also after findOrRead', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-routes-'));
  const path = join(dir, 'state.json');
  const rec = (id: string, name: string) => ({ id, name, createdAt: new Date().toISOString(), image: 'x', command: [], env: {}, desired: 'running' });
  const text = JSON.stringify({ version: 1, sandboxes: { a1: rec('a1', 'web') } });
  writeFileSync(path, text);
  const store = { path, sandboxes: () => [rec('a1', 'web'), rec('c3', 'db')], signature: () => 'same' };
  const routes = new RouteTable(store as never);
  try {
    await routes.refresh();
    const first = routes.find('web');
    await routes.refresh();
    assert.equal(routes.find('web'), first, 'same text: the records in hand are kept (not parsed again)');
    // findOrRead replaced them from the store: the same file text must be used again, not skipped.
    assert.equal(routes.findOrRead('db')?.id, 'c3');
    await routes.refresh();
    assert.equal(routes.find('db'), undefined, 'the file (without db) is in force again');
    writeFileSync(path, JSON.stringify({ version: 1, sandboxes: { b2: rec('b2', 'api') } }));
    await routes.refresh();
    assert.equal(routes.find('api')?.id, 'b2');
    assert.equal(routes.find('web'), undefined);
  } finally {
    routes.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
