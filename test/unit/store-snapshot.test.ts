// The store's generation: every write names a new one at the head of the file, and a process's
// snapshot is one frozen parse per generation, never a stale one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Store } from '../../src/store/store.ts';
import type { SandboxRecord } from '../../src/core/sandbox.ts';

const rec = (id: string, name: string, createdAt = new Date().toISOString()) => ({ id, name, createdAt, image: 'x', command: [], env: {}, desired: 'running' }) as unknown as SandboxRecord;

function withHome(run: (home: string) => Promise<void>) {
  return async () => {
    const home = mkdtempSync(join(tmpdir(), 'sbx-store-'));
    try {
      await run(home);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  };
}

test('store: each write starts the file with a new generation, which read() does not hand out', withHome(async (home) => {
  const store = new Store(home);
  await store.update((d) => void (d.sandboxes.a1 = rec('a1', 'web')));
  const first = readFileSync(store.path, 'utf8');
  assert.match(first, /^\{"generation":"[0-9a-f]{16}","version":1,/);
  await store.update(() => {});
  const second = readFileSync(store.path, 'utf8');
  assert.notEqual(second.slice(0, 32), first.slice(0, 32), 'a write with no change still names a new generation');
  assert.equal('generation' in store.read(), false);
  assert.notEqual(store.signature(), 'absent');
}));

test('store: snapshot() is shared and frozen until the file changes, whoever changed it', withHome(async (home) => {
  const store = new Store(home);
  const other = new Store(home); // another sbx process
  await other.update((d) => void (d.sandboxes.a1 = rec('a1', 'web', '2026-01-01T00:00:00.000Z')));
  const a = store.snapshot();
  assert.equal(store.snapshot(), a, 'the same generation: the same snapshot');
  assert.ok(Object.isFrozen(a.data.sandboxes.a1) && Object.isFrozen(a.data.sandboxes.a1!.env) && Object.isFrozen(a.sandboxes));
  assert.throws(() => { (a.data.sandboxes.a1 as { name: string }).name = 'x'; }, TypeError);
  assert.equal(store.sandboxes()[0], a.data.sandboxes.a1);
  // read() is a copy to change: changing it changes no snapshot.
  const copy = store.read();
  copy.sandboxes.a1!.name = 'changed';
  assert.equal(store.snapshot().data.sandboxes.a1!.name, 'web');
  const signature = store.signature();
  await other.update((d) => void (d.sandboxes.b2 = rec('b2', 'api', '2025-01-01T00:00:00.000Z')));
  assert.notEqual(store.signature(), signature);
  const b = store.snapshot();
  assert.notEqual(b, a);
  assert.deepEqual(b.sandboxes.map((r) => r.name), ['api', 'web'], 'oldest first');
  // This process's own write is in hand at once, and an update's change gets a fresh copy.
  await store.update((d) => { d.sandboxes.b2!.name = 'api2'; });
  assert.equal(store.snapshot().data.sandboxes.b2!.name, 'api2');
  assert.equal(b.data.sandboxes.b2!.name, 'api', 'an older snapshot is left as it was');
}));

test('store: a file without a generation (an older sbx, or by hand) is read each time, never taken for one in hand', withHome(async (home) => {
  const store = new Store(home);
  await store.update((d) => void (d.sandboxes.a1 = rec('a1', 'web')));
  store.snapshot();
  writeFileSync(store.path, JSON.stringify({ version: 1, sandboxes: { c3: rec('c3', 'db') } }));
  assert.deepEqual(store.sandboxes().map((r) => r.name), ['db']);
  writeFileSync(store.path, JSON.stringify({ version: 1, sandboxes: { d4: rec('d4', 'cache') } }));
  assert.deepEqual(store.sandboxes().map((r) => r.name), ['cache']);
  assert.deepEqual(Object.keys(store.read().sandboxes), ['d4']);
  // A head that only looks like a generation, with the rest changed by hand, is not trusted either
  // once its generation differs from the one in hand.
  await store.update(() => {});
  const text = readFileSync(store.path, 'utf8').replace('"d4"', '"e5"');
  writeFileSync(store.path, text.replace(/^\{"generation":"[0-9a-f]{16}"/, '{"generation":"0000000000000000"'));
  assert.deepEqual(Object.keys(store.read().sandboxes), ['e5']);
}));

test('store: a file that is not JSON is a clear runtime error, from read() and snapshot()', withHome(async (home) => {
  const store = new Store(home);
  writeFileSync(store.path, '{"generation":"0123456789abcdef", oops');
  assert.throws(() => store.read(), /the sbx store .* cannot be read/);
  assert.throws(() => store.snapshot(), /the sbx store .* cannot be read/);
}));

test('store update: a change copies only what it reads; the file is what JSON.stringify would write', withHome(async (home) => {
  const store = new Store(home);
  await store.update((d) => {
    for (let i = 0; i < 5; i++) d.sandboxes[`id${i}`] = rec(`id${i}`, `box${i}`, `2026-01-0${i + 1}T00:00:00.000Z`);
    d.pool = { size: 2, entries: {} };
  });
  const before = store.snapshot();
  let seen: unknown;
  await store.update((d, view) => {
    assert.equal(view, before, 'the view is the snapshot in force');
    assert.deepEqual(Object.keys(d.sandboxes), ['id0', 'id1', 'id2', 'id3', 'id4']);
    assert.ok('id3' in d.sandboxes && !('nope' in d.sandboxes));
    const r = d.sandboxes.id1!;
    assert.equal(Object.isFrozen(r), false, 'a record read is a copy to change');
    assert.equal(d.sandboxes.id1, r, 'read twice: the same copy');
    r.env = { A: '1' };
    void d.sandboxes.id2; // read, not changed
    delete d.sandboxes.id3;
    d.sandboxes.id9 = rec('id9', 'box9', '2026-02-01T00:00:00.000Z');
    d.pool!.size = 3;
    seen = r;
  });
  const after = store.snapshot();
  assert.equal(after.data.sandboxes.id0, before.data.sandboxes.id0, 'a record the change did not read is the same object');
  assert.equal(after.data.sandboxes.id2, before.data.sandboxes.id2, 'nor one it read and left as it was');
  assert.notEqual(after.data.sandboxes.id1, seen, 'the snapshot holds a frozen copy, not the change\'s object');
  assert.deepEqual(after.data.sandboxes.id1!.env, { A: '1' });
  assert.ok(Object.isFrozen(after.data.sandboxes.id1) && Object.isFrozen(after.data.sandboxes.id9));
  assert.equal(after.data.sandboxes.id3, undefined);
  assert.equal(after.data.pool!.size, 3);
  // The snapshot is what a parse of the file gives, and the file what JSON.stringify makes of it.
  const text = readFileSync(store.path, 'utf8');
  const parsed = JSON.parse(text) as Record<string, unknown>;
  assert.deepEqual(Object.keys(parsed), ['generation', 'version', 'sandboxes', 'pool']);
  assert.equal(text, JSON.stringify({ generation: parsed.generation, version: 1, sandboxes: parsed.sandboxes, pool: parsed.pool }) + '\n');
  assert.deepEqual(Object.keys(parsed.sandboxes as object), ['id0', 'id1', 'id2', 'id4', 'id9']);
  assert.deepEqual(JSON.parse(JSON.stringify(after.data)), { version: 1, sandboxes: parsed.sandboxes, pool: parsed.pool });
  const fresh = new Store(home).snapshot();
  assert.deepEqual(fresh.data, after.data);
  assert.deepEqual(fresh.sandboxes.map((r) => r.id), after.sandboxes.map((r) => r.id));
}));

test('store update: enumeration, spread, a map of its own, a deleted record put back, a throwing change', withHome(async (home) => {
  const store = new Store(home);
  await store.update((d) => {
    d.sandboxes.a = rec('a', 'one', '2026-01-01T00:00:00.000Z');
    d.sandboxes.b = rec('b', 'two', '2026-01-02T00:00:00.000Z');
  });
  await store.update((d) => {
    for (const r of Object.values(d.sandboxes)) r.desired = 'stopped';
    assert.deepEqual(Object.entries({ ...d.sandboxes }).map(([id, r]) => [id, r.desired]), [['a', 'stopped'], ['b', 'stopped']]);
    delete d.sandboxes.a;
    d.sandboxes.a = rec('a', 'again', '2026-01-03T00:00:00.000Z');
  });
  assert.deepEqual(store.sandboxes().map((r) => [r.name, r.desired]), [['two', 'stopped'], ['again', 'running']]);
  await store.update((d) => {
    d.sandboxes = { c: rec('c', 'three') };
  });
  assert.deepEqual(store.sandboxes().map((r) => r.name), ['three']);
  assert.ok(Object.isFrozen(store.sandboxes()[0]));
  const generation = store.signature();
  await assert.rejects(store.update((d) => {
    d.sandboxes.c!.name = 'changed';
    throw new Error('no');
  }), /no/);
  assert.equal(store.signature(), generation, 'nothing written');
  assert.equal(store.sandboxes()[0]!.name, 'three', 'the snapshot is as it was');
  assert.equal(store.read().sandboxes.c!.name, 'three');
}));

test('store: an edit by hand that keeps the first line is still seen, and the next update keeps it', withHome(async (home) => {
  const store = new Store(home);
  await store.update((d) => {
    d.sandboxes.a = rec('a', 'one');
    d.sandboxes.b = rec('b', 'two');
  });
  assert.equal(store.sandboxes().length, 2);
  const parsed = JSON.parse(readFileSync(store.path, 'utf8'));
  delete parsed.sandboxes.b;
  writeFileSync(store.path, JSON.stringify(parsed) + '\n'); // same generation, first
  assert.deepEqual(store.sandboxes().map((r) => r.id), ['a']);
  assert.deepEqual(Object.keys(store.read().sandboxes), ['a']);
  await store.update(() => {});
  assert.deepEqual(Object.keys(JSON.parse(readFileSync(store.path, 'utf8')).sandboxes), ['a'], 'the removed record is not written back');
}));

test('store: a file that cannot be parsed is not kept: once repaired, the same process reads it', withHome(async (home) => {
  const store = new Store(home);
  await new Store(home).update((d) => void (d.sandboxes.a = rec('a', 'one')));
  const good = readFileSync(store.path, 'utf8');
  writeFileSync(store.path, good.slice(0, 80));
  assert.throws(() => store.snapshot(), /cannot be read/);
  assert.throws(() => store.read(), /cannot be read/);
  writeFileSync(store.path, good);
  assert.deepEqual(store.sandboxes().map((r) => r.id), ['a']);
  await store.update((d) => void (d.sandboxes.a!.name = 'renamed'));
  assert.equal(store.sandboxes()[0]!.name, 'renamed');
}));

test('store update: a record deleted and set again comes last, as in a plain object; descriptors follow what was set', withHome(async (home) => {
  const store = new Store(home);
  await store.update((d) => {
    d.sandboxes.a = rec('a', 'one');
    d.sandboxes.b = rec('b', 'two');
  });
  await store.update((d) => {
    void d.sandboxes.a;
    delete d.sandboxes.a;
    d.sandboxes.a = rec('a', 'again');
    assert.deepEqual(Object.keys(d.sandboxes), ['b', 'a']);
    (d.sandboxes as Record<string, unknown>).b = undefined;
    assert.equal(Object.getOwnPropertyDescriptor(d.sandboxes, 'b')?.value, undefined);
  });
  assert.deepEqual(Object.keys(JSON.parse(readFileSync(store.path, 'utf8')).sandboxes), ['a'], 'a record set to undefined is left out, as JSON.stringify does');
}));
