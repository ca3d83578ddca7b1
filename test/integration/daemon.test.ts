// With the daemon (the gateway) running, create and rm are carried out by it: same answers, same
// exit codes, same rollback on Ctrl-C; a client that talks to another engine does its own work.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { interruptCreates, World } from '../helpers.ts';

const world = new World();
after(() => world.cleanup());
const gatewayLog = () => readFileSync(join(world.home, 'gateway.log'), 'utf8');

describe('create and rm through the daemon', () => {
  before(async () => {
    const r = await world.sbx(['gateway', 'start']);
    assert.equal(r.code, 0, r.stderr);
  });

  it('creates and removes, and the daemon did the work', async () => {
    const box = await world.json(['create', '--name', 'via-daemon', '-e', 'A=1']);
    assert.equal(box.status, 'running');
    assert.deepEqual(box.env, { A: '1' });
    assert.match(gatewayLog(), /control: create via-daemon/);
    assert.equal((await world.sbx(['exec', 'via-daemon', '--', 'sh', '-c', 'echo $A'])).stdout, '1\n');
    const removed = await world.json(['rm', '--force', 'via-daemon']);
    assert.deepEqual([removed.name, removed.removed], ['via-daemon', true]);
    assert.match(gatewayLog(), /control: remove via-daemon/);
    assert.deepEqual(await world.leftovers(), { containers: [], networks: [], tables: [] });
  });

  it('exposes and unexposes ports through the daemon', async () => {
    await world.json(['create', '--name', 'ports-d']);
    const ports = await world.json<any[]>(['port', 'expose', 'ports-d', '8000', '--private']);
    assert.deepEqual(ports.map((p) => [p.port, p.public]), [[8000, false]]);
    assert.match(gatewayLog(), /control: expose ports-d/);
    assert.deepEqual(await world.json(['port', 'rm', 'ports-d', '8000']), [{ port: 8000, removed: true }]);
    assert.match(gatewayLog(), /control: unexpose ports-d/);
    const bad = await world.sbx(['port', 'expose', 'ghost', '8000']);
    assert.equal(bad.code, 3);
    await world.sbx(['rm', '-f', 'ports-d']);
  });

  it('keeps exit codes and one-line errors', async () => {
    const bad = await world.sbx(['create', '--name', 'Bad_Name']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error: invalid sandbox name "Bad_Name"/);
    const ghost = await world.sbx(['rm', 'ghost']);
    assert.equal(ghost.code, 3);
    assert.equal((await world.sbx(['rm', '--force', 'ghost'])).code, 0);
    await world.json(['create', '--name', 'dup']);
    const dup = await world.sbx(['create', '--name', 'dup']);
    assert.equal(dup.code, 2);
    assert.match(dup.stderr, /already exists/);
    const running = await world.sbx(['rm', 'dup']);
    assert.equal(running.code, 2);
    assert.match(running.stderr, /is running: pass --force/);
    await world.sbx(['rm', '-f', 'dup']);
  });

  it('Ctrl-C during a delegated create leaves a whole sandbox or nothing', async () => {
    await interruptCreates(world, 'dint', [120, 200, 280, 360, 440]);
  });

  it("a client with another DOCKER_HOST does not delegate (its engine is not the daemon's)", async () => {
    const r = await world.sbx(['create', '--name', 'elsewhere'], { env: { DOCKER_HOST: 'unix:///nonexistent.sock' } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no Docker engine answers at unix:\/\/\/nonexistent\.sock/);
    assert.doesNotMatch(gatewayLog(), /control: create elsewhere/);
  });
});
