// No stuck state: a create killed at the wrong moment does not keep its name for good, and a
// rollback or removal that cannot remove everything keeps what is left recorded, says so, and
// finishes later (sbx rm, the next create of the name, the gateway when it starts).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chainOf, docker, eventually, run, sleep, World } from '../helpers.ts';
import { LocalSbx as Sbx } from '../../src/api/local-sbx.ts';
import { RemovalError, RuntimeError } from '../../src/core/errors.ts';
import { Runtime } from '../../src/runtime/docker.ts';
import type { SandboxRecord } from '../../src/core/sandbox.ts';

// nft behind a switch: while the flag file exists it refuses to delete sandbox tables (and only
// that), as a kernel in trouble might; applying rules still works.
const nftDir = mkdtempSync(join(tmpdir(), 'sbx-nft-rel-'));
const nftWrapper = join(nftDir, 'nft');
const noDeletes = join(nftDir, 'no-deletes');
writeFileSync(
  nftWrapper,
  `#!/bin/sh\nscript=$(cat)\nif [ -e ${noDeletes} ] && printf '%s\\n' "$script" | grep -q '^delete chain inet sbx '; then echo "Error: simulated failure" >&2; exit 1; fi\nprintf '%s\\n' "$script" | exec nft "$@"\n`,
);
chmodSync(nftWrapper, 0o755);

// The Node-only gateway: a gateway killed with -9 leaves no nginx of its own behind.
const world = new World({ SBX_GATEWAY_ENGINE: 'node', SBX_NFT: nftWrapper });
const foreign: string[] = [];
after(async () => {
  rmSync(noDeletes, { force: true });
  for (const c of foreign) await docker('rm', '-f', c);
  await world.cleanup();
  rmSync(nftDir, { recursive: true, force: true });
});

const records = (): SandboxRecord[] => {
  try {
    return Object.values(JSON.parse(readFileSync(join(world.home, 'state.json'), 'utf8')).sandboxes ?? {});
  } catch {
    return [];
  }
};
const gatewayPid = (): number => JSON.parse(readFileSync(join(world.home, 'gateway.json'), 'utf8')).pid;
const gone = (pid: number) => {
  try {
    process.kill(pid, 0);
    return false;
  } catch {
    return true;
  }
};

/** The sandbox's own objects that still exist: its container, network and nft table. */
async function objectsOf(id: string): Promise<string[]> {
  const left: string[] = [];
  if ((await docker('container', 'inspect', `sbx-${id}`)).code === 0) left.push('container');
  if ((await docker('network', 'inspect', `sbx-${id}`)).code === 0) left.push('network');
  if ((await run('nft', chainOf(id))).code === 0) left.push('table');
  return left;
}

/**
 * Starts `sbx create --name NAME` through the daemon and kills the daemon (kill -9) once the
 * create's record is in the store and its network is being made: the wrong moment. Resolves with
 * the id of the killed create.
 */
async function killDaemonDuringCreate(name: string): Promise<string> {
  const started = await world.sbx(['gateway', 'start']);
  assert.equal(started.code, 0, started.stderr);
  const pid = gatewayPid();
  const child = world.spawn(['create', '--name', name]);
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  let record: SandboxRecord | undefined;
  const deadline = Date.now() + 20_000;
  while (!(record = records().find((r) => r.name === name && r.creating)) && Date.now() < deadline) await sleep(5);
  assert.ok(record, 'the create recorded its sandbox');
  process.kill(pid, 'SIGKILL');
  assert.equal(await exited, 1, stderr);
  assert.match(stderr, /^error: the sbx daemon closed the connection before answering/);
  // Let the engine finish what it was asked before the kill (the network), and the kernel reap the daemon.
  await sleep(500);
  await eventually(async () => gone(pid), 'the killed daemon to be reaped', 10_000);
  return record.id;
}

describe('a create killed at the wrong moment', () => {
  it('does not keep its name: the next create of the name rolls it back and succeeds', async () => {
    const killed = await killDaemonDuringCreate('x');
    assert.ok(records().some((r) => r.id === killed && r.creating), 'the killed create left its record');
    const again = await world.sbx(['create', '--name', 'x', '--json']);
    assert.equal(again.code, 0, `create --name x after the kill: ${again.stderr}`);
    const box = JSON.parse(again.stdout);
    assert.notEqual(box.id, killed);
    assert.equal((await world.json(['inspect', 'x'])).id, box.id);
    assert.deepEqual(await objectsOf(killed), [], 'the killed create\'s container, network and nft table are gone');
    assert.ok(!records().some((r) => r.id === killed), 'and its record');
    assert.equal((await world.sbx(['rm', '-f', 'x'])).code, 0);
  });

  it('is rolled back by the gateway when it starts', async () => {
    const killed = await killDaemonDuringCreate('y');
    const start = await world.sbx(['gateway', 'start']);
    assert.equal(start.code, 0, start.stderr);
    await eventually(async () => readFileSync(join(world.home, 'gateway.log'), 'utf8').includes(`reconcile: rolled back the unfinished create of y (${killed})`), 'the gateway to roll the create back');
    assert.deepEqual(await objectsOf(killed), []);
    assert.deepEqual(records(), []);
    assert.equal((await world.sbx(['inspect', 'y'])).code, 3);
    assert.equal((await world.sbx(['create', '--name', 'y'])).code, 0);
    assert.equal((await world.sbx(['rm', '-f', 'y'])).code, 0);
  });

  it('a create whose creator still runs keeps its name (it is not stale)', async () => {
    const child = world.spawn(['create', '--name', 'busy']);
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    while (!records().some((r) => r.name === 'busy')) await sleep(5);
    const second = await world.sbx(['create', '--name', 'busy']);
    assert.equal(second.code, 2, second.stderr);
    assert.match(second.stderr, /^error: a sandbox named "busy" already exists/);
    assert.equal(await exited, 0);
    assert.equal((await world.sbx(['rm', '-f', 'busy'])).code, 0);
  });
});

describe('a rollback or removal that cannot remove everything', () => {
  it('CLI: the failed create says what it left (warning line); ls shows it; rm finishes it later', async () => {
    writeFileSync(noDeletes, '');
    // The image cannot be had: the create fails after its network and rules were made.
    const r = await world.sbx(['create', '--name', 'half', '--image', 'sbx-test/absent:never']);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trimEnd().split('\n');
    assert.match(lines[0]!, /^error: image sbx-test\/absent:never is not on this engine/);
    assert.match(lines[1]!, /^warning: could not remove egress rules \(nft chains and sets \*_[a-z0-9]+ in table inet sbx\) of sandbox half \(.*simulated failure\): sbx ls shows it as removing, and sbx rm half retries/);
    assert.equal(lines.length, 2, r.stderr);
    const [listed] = await world.json<any[]>(['ls']);
    assert.equal(listed.name, 'half');
    assert.equal(listed.status, 'removing');
    assert.deepEqual(listed.removing.left, [`egress rules (nft chains and sets *_${listed.id} in table inet sbx)`]);
    assert.match((await world.sbx(['ls'])).stdout, /^half\t[a-z0-9]+\tsbx-test\/absent:never\tremoving\t/m);
    // Nothing brings it back meanwhile.
    const start = await world.sbx(['start', 'half']);
    assert.equal(start.code, 1);
    assert.match(start.stderr, /^error: sandbox half is being removed \(left: egress rules .*\): sbx rm half finishes it/);
    // rm retries: still failing, it says so and keeps the record...
    const failing = await world.sbx(['rm', 'half']);
    assert.equal(failing.code, 1);
    assert.match(failing.stderr, /^error: could not remove egress rules .* of sandbox half/);
    assert.equal((await world.json<any[]>(['ls'])).length, 1);
    // ...and once the cause is gone it finishes.
    rmSync(noDeletes);
    const done = await world.json(['rm', 'half']);
    assert.deepEqual([done.name, done.removed], ['half', true]);
    assert.deepEqual(await world.json(['ls']), []);
    assert.deepEqual(await objectsOf(listed.id), []);
  });

  it('library: the error carries the warning; a network another container holds stays recorded until it is free', async () => {
    await world.sbx(['gateway', 'start']); // this world's gateway (a free port), not one from this process's env
    let id = '';
    // The engine refuses the container, and meanwhile someone else attached a container to the
    // sandbox's network, so the rollback cannot remove the network.
    class Refusing extends Runtime {
      override async createSandboxContainer(record: SandboxRecord): Promise<void> {
        id = record.id;
        const c = await docker('run', '-d', '--network', `sbx-${record.id}`, '--label', `sbx-test.home=${world.home}`, 'sbx/base:bookworm', 'sleep', 'infinity');
        assert.equal(c.code, 0, c.stderr);
        foreign.push(c.stdout.trim());
        throw new RuntimeError('could not create container: refused by the test engine');
      }
    }
    const sbx = new Sbx({ home: world.home, runtime: new Refusing() });
    const err = await sbx.create({ name: 'held' }).then(
      () => assert.fail('the create should fail'),
      (e: RuntimeError) => e,
    );
    assert.ok(err instanceof RuntimeError);
    assert.equal(err.message, 'could not create container: refused by the test engine');
    assert.equal(err.warnings.length, 1);
    assert.match(err.warnings[0]!, new RegExp(`^could not remove network sbx-${id} of sandbox held \\(.*\\): sbx ls shows it as removing, and sbx rm held retries`));
    const [info] = await sbx.list();
    assert.deepEqual([info!.name, info!.status, info!.removing?.left], ['held', 'removing', [`network sbx-${id}`]]);
    // The name is still held: a create of it retries the removal, which still fails, and says why.
    const again = await world.sbx(['create', '--name', 'held']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, new RegExp(`^error: the name "held" is still held by an unfinished sandbox: could not remove network sbx-${id} of sandbox held`));
    // rm through the daemon: the same words (errors cross its socket as message and exit code)...
    await assert.rejects(new Sbx({ home: world.home }).remove('held'), (e: Error) =>
      e instanceof RuntimeError && new RegExp(`^could not remove network sbx-${id} of sandbox held \\(.*active endpoints\\)`).test(e.message));
    // ...and done here, a RemovalError naming what is left.
    const removal = await new Sbx({ home: world.home, delegate: false }).remove('held').then(
      () => assert.fail('rm should fail while the network is held'),
      (e: RemovalError) => e,
    );
    assert.ok(removal instanceof RemovalError);
    assert.deepEqual(removal.left, [`network sbx-${id}`]);
    assert.equal(removal.exitCode, 1);
    // Once the network is free, the gateway finishes the removal when it starts.
    await docker('rm', '-f', foreign.pop()!);
    await world.sbx(['gateway', 'stop']);
    assert.equal((await world.sbx(['gateway', 'start'])).code, 0);
    await eventually(async () => readFileSync(join(world.home, 'gateway.log'), 'utf8').includes(`reconcile: finished removing held (${id})`), 'the gateway to finish the removal');
    assert.deepEqual(await world.json(['ls']), []);
    assert.deepEqual(await objectsOf(id), []);
  });
});

describe('left nothing behind', () => {
  it('no container, network or nft table of this world', async () => {
    assert.ok(!existsSync(noDeletes));
    assert.deepEqual(await world.leftovers(), { containers: [], networks: [], tables: [] });
  });
});
