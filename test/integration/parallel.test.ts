// Concurrency (8 parallel creates and removes through one store) and isolation between sandboxes.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { World } from '../helpers.ts';

const world = new World();
after(() => world.cleanup());

describe('parallel creates and removes', () => {
  it('8 parallel creates all succeed with unique names and ids, and none is lost from the store', async () => {
    const made = await Promise.all(Array.from({ length: 8 }, (_, i) => world.json(['create', '--name', `par-${i}`])));
    assert.equal(new Set(made.map((s) => s.id)).size, 8);
    const list = await world.json<any[]>(['ls']);
    assert.deepEqual(list.map((s) => s.name).sort(), made.map((s) => s.name).sort());
    assert.ok(list.every((s) => s.status === 'running'));
  });

  it('8 parallel creates of the same name: exactly one wins', async () => {
    const results = await Promise.all(Array.from({ length: 8 }, () => world.sbx(['create', '--name', 'same', '--json'])));
    assert.equal(results.filter((r) => r.code === 0).length, 1);
    assert.ok(results.filter((r) => r.code !== 0).every((r) => r.code === 2 && /already exists/.test(r.stderr)));
    assert.equal((await world.leftovers()).containers.length, 9);
  });

  it('8 parallel removes leave no container, network or store entry', async () => {
    const names = [...Array.from({ length: 8 }, (_, i) => `par-${i}`)];
    const results = await Promise.all(names.map((n) => world.sbx(['rm', '--force', n])));
    assert.ok(results.every((r) => r.code === 0), results.map((r) => r.stderr).join(''));
    await world.sbx(['rm', '--force', 'same']);
    assert.deepEqual(await world.leftovers(), { containers: [], networks: [], tables: [] });
    assert.deepEqual(await world.json(['ls']), []);
  });
});

describe('isolation', () => {
  it('a sandbox cannot reach another sandbox, while each reaches its own server', async () => {
    const a = await world.json(['create', '--name', 'iso-a']);
    const b = await world.json(['create', '--name', 'iso-b']);
    assert.notEqual(a.bridge, b.bridge);
    await world.sbx(['exec', '--detach', 'iso-b', '--', 'python3', '-m', 'http.server', '8000']);
    // Wait for the server inside b.
    let own = 1;
    for (let i = 0; i < 50 && own !== 0; i++) own = (await world.sbx(['exec', 'iso-b', '--', 'curl', '-sf', '-o', '/dev/null', 'http://127.0.0.1:8000/'])).code;
    assert.equal(own, 0, 'b reaches its own server');
    const cross = await world.sbx(['exec', 'iso-a', '--', 'curl', '-s', '-o', '/dev/null', '--max-time', '3', `http://${b.ip}:8000/`]);
    assert.notEqual(cross.code, 0, 'a must not reach b');
  });
});

describe('separate SBX_HOMEs are separate worlds', () => {
  it('a sandbox of one home is not seen from another', async () => {
    const other = new World();
    try {
      assert.deepEqual(await other.json(['ls']), []);
      assert.equal((await other.sbx(['inspect', 'iso-a'])).code, 3);
    } finally {
      await other.cleanup();
    }
  });
});
