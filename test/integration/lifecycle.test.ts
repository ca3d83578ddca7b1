// The sandbox lifecycle through the real CLI against the real engine. Runs three ways
// (SBX_TEST_AS: root, user, remote; see test/test-mode.ts).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sleep } from '../helpers.ts';
import { closeMode, modeWorld } from '../test-mode.ts';

const world = await modeWorld();
const docker = (...args: string[]) => world.docker(...args);
after(async () => {
  await world.cleanup();
  await closeMode();
});

describe('create, list, inspect', () => {
  let box: any;
  before(async () => {
    box = await world.json(['create', '--name', 'life', '-e', 'GREETING=hi there', '--memory', '256m', '--cpus', '0.5']);
  });

  it('prints the sandbox as JSON with the contract fields', () => {
    assert.equal(box.name, 'life');
    assert.match(box.id, /^[a-z0-9]{10}$/);
    assert.equal(box.image, 'sbx/base:bookworm');
    assert.equal(box.status, 'running');
    assert.ok(!Number.isNaN(Date.parse(box.createdAt)));
    assert.equal(box.memory, 256 * 1024 * 1024);
    assert.equal(box.cpus, 0.5);
    assert.equal(box.bridge, `sbx-${box.id}`);
  });

  it('applies limits, env, labels and hardening to the container', async () => {
    const r = await docker('inspect', box.container);
    const [c] = JSON.parse(r.stdout);
    assert.equal(c.HostConfig.Memory, 256 * 1024 * 1024);
    assert.equal(c.HostConfig.NanoCpus, 5e8);
    assert.equal(c.HostConfig.Init, true);
    assert.deepEqual(c.HostConfig.SecurityOpt, ['no-new-privileges']);
    assert.equal(c.HostConfig.PidsLimit, 1024); // capabilities and the pids limit in depth: containers.test.ts
    assert.ok(c.Config.Env.includes('GREETING=hi there'));
    assert.equal(c.Config.Labels['sbx.id'], box.id);
    assert.equal(c.Config.Labels['sbx.name'], 'life');
    assert.equal(c.Config.Labels['sbx.home'], await world.labelHome());
    const net = JSON.parse((await docker('network', 'inspect', box.dockerNetwork)).stdout)[0];
    assert.equal(net.Options['com.docker.network.bridge.name'], box.bridge);
    assert.equal(net.Labels['sbx.home'], await world.labelHome());
  });

  it('runs an init as PID 1 so zombies are reaped', async () => {
    const r = await world.sbx(['exec', 'life', '--', 'cat', '/proc/1/cmdline']);
    assert.match(r.stdout.replace(/\0/g, ' '), /docker-init|tini/);
  });

  it('ls --json, ls -q and plain ls', async () => {
    const list = await world.json<any[]>(['ls']);
    assert.equal(list.length, 1);
    assert.deepEqual(Object.keys(list[0]).filter((k) => ['id', 'name', 'image', 'status', 'createdAt'].includes(k)).length, 5);
    assert.equal((await world.sbx(['ls', '-q'])).stdout, `${box.id}\n`);
    const plain = await world.sbx(['ls']);
    assert.equal(plain.stdout.split('\t').slice(0, 4).join(' '), `life ${box.id} sbx/base:bookworm running`);
    assert.doesNotMatch(plain.stdout, /\x1b\[/, 'no colour in a pipe');
  });

  it('inspect finds a sandbox by name, id and id prefix', async () => {
    for (const ref of ['life', box.id, box.id.slice(0, 4)]) {
      assert.equal((await world.json(['inspect', ref])).id, box.id);
    }
  });

  it('exec streams stdout and stderr separately and returns the exit code', async () => {
    const r = await world.sbx(['exec', 'life', '--', 'sh', '-c', 'echo out; echo err >&2; echo "$GREETING"; exit 7']);
    assert.equal(r.code, 7);
    assert.equal(r.stdout, 'out\nhi there\n');
    assert.equal(r.stderr, 'err\n');
  });

  it('exec -i forwards stdin, -e sets env, -w sets the directory', async () => {
    const r = await world.sbx(['exec', '-i', 'life', '--', 'sh', '-c', 'wc -c'], { input: 'x'.repeat(100_000) });
    assert.equal(r.stdout.trim(), '100000');
    const e = await world.sbx(['exec', '-e', 'A=1', '-e', 'B=two', '-w', '/tmp', 'life', '--', 'sh', '-c', 'echo $A $B $(pwd)']);
    assert.equal(e.stdout, '1 two /tmp\n');
  });

  it('exec --detach leaves a background process running', async () => {
    const r = await world.sbx(['exec', '--detach', 'life', '--', 'sh', '-c', 'sleep 1; echo done > /tmp/detached; sleep 600']);
    assert.equal(r.code, 0, r.stderr);
    await sleep(1500);
    const check = await world.sbx(['exec', 'life', '--', 'sh', '-c', 'cat /tmp/detached; pgrep -f "sleep 600" >/dev/null && echo alive']);
    assert.equal(check.stdout, 'done\nalive\n');
  });

  it('exec of a command that does not exist fails with 126/127 and a message', async () => {
    const r = await world.sbx(['exec', 'life', '--', 'no-such-command']);
    assert.ok(r.code === 126 || r.code === 127, `code ${r.code}`);
    assert.match(r.stdout + r.stderr, /no-such-command|not found|executable/);
  });
});

describe('stop, start, pause, resume', () => {
  it('moves through the states and pause keeps processes', async () => {
    await world.json(['create', '--name', 'states']);
    await world.sbx(['exec', '--detach', 'states', '--', 'sleep', '3600']);
    const pid = (await world.sbx(['exec', 'states', '--', 'pgrep', '-x', 'sleep', '-n'])).stdout.trim();
    assert.equal((await world.json(['pause', 'states'])).status, 'paused');
    assert.equal((await world.json(['inspect', 'states'])).status, 'paused');
    const paused = await world.sbx(['exec', 'states', '--', 'true']);
    assert.equal(paused.code, 1);
    assert.match(paused.stderr, /^error: sandbox states is paused: sbx resume it first\n$/);
    assert.equal((await world.json(['resume', 'states'])).status, 'running');
    assert.equal((await world.sbx(['exec', 'states', '--', 'pgrep', '-x', 'sleep', '-n'])).stdout.trim(), pid, 'same process after resume');
    assert.equal((await world.json(['stop', 'states'])).status, 'stopped');
    const resumeStopped = await world.sbx(['resume', 'states']);
    assert.equal(resumeStopped.code, 1);
    assert.equal((await world.json(['start', 'states'])).status, 'running');
    assert.equal((await world.sbx(['exec', 'states', '--', 'true'])).code, 0);
  });

  it('takes several sandboxes at once and prints an array for them', async () => {
    await world.json(['create', '--name', 'multi-a']);
    await world.json(['create', '--name', 'multi-b']);
    const stopped = await world.json<any[]>(['stop', 'multi-a', 'multi-b']);
    assert.deepEqual(stopped.map((s) => [s.name, s.status]), [['multi-a', 'stopped'], ['multi-b', 'stopped']]);
    const removed = await world.json<any[]>(['rm', 'multi-a', 'multi-b']);
    assert.deepEqual(removed.map((r) => [r.name, r.removed]), [['multi-a', true], ['multi-b', true]]);
  });

  it('a sandbox created with -- CMD runs it as its main command', async () => {
    const box = await world.json(['create', '--name', 'main-cmd', '--', 'sh', '-c', 'echo started > /tmp/main; exec sleep 3600']);
    assert.deepEqual(box.command, ['sh', '-c', 'echo started > /tmp/main; exec sleep 3600']);
    assert.equal((await world.sbx(['exec', 'main-cmd', '--', 'cat', '/tmp/main'])).stdout, 'started\n');
    await world.json(['stop', 'main-cmd']);
    await world.json(['start', 'main-cmd']);
    assert.equal((await world.sbx(['exec', 'main-cmd', '--', 'pgrep', '-f', 'sleep 3600'])).code, 0, 'comes back with its sandbox');
  });
});

describe('a missing container', () => {
  it('start brings it back from the store (same id, name and command)', async () => {
    const box = await world.json(['create', '--name', 'reborn', '--', 'sleep', '3600']);
    await docker('rm', '-f', box.container);
    const again = await world.json(['start', 'reborn']);
    assert.deepEqual([again.id, again.status, again.command], [box.id, 'running', ['sleep', '3600']]);
    await world.sbx(['rm', '-f', 'reborn']);
  });
});

describe('rm', () => {
  it('refuses a running sandbox without --force when not on a TTY (no prompt)', async () => {
    await world.json(['create', '--name', 'gone']);
    const r = await world.sbx(['rm', 'gone']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^error: sandbox gone is running: pass --force/);
  });

  it('removes a stopped sandbox without --force, and leaves no container or network', async () => {
    const box = await world.json(['inspect', 'gone']);
    await world.json(['stop', 'gone']);
    assert.equal((await world.sbx(['rm', 'gone'])).code, 0);
    assert.equal((await docker('inspect', box.container)).code, 1);
    assert.equal((await docker('network', 'inspect', box.dockerNetwork)).code, 1);
    assert.equal((await world.sbx(['inspect', 'gone'])).code, 3);
  });

  it('rm --force of a gone sandbox succeeds; without --force it is not found (3)', async () => {
    assert.equal((await world.sbx(['rm', '--force', 'gone'])).code, 0);
    const r = await world.sbx(['rm', 'gone']);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /^error: no sandbox named "gone"/);
  });

  it('shows a container removed behind sbx\'s back as missing, and rm cleans up', async () => {
    const box = await world.json(['create', '--name', 'behind']);
    await docker('rm', '-f', box.container);
    assert.equal((await world.json(['inspect', 'behind'])).status, 'missing');
    const ls = await world.json<any[]>(['ls']);
    assert.equal(ls.find((s) => s.name === 'behind').status, 'missing');
    const rm = await world.json(['rm', 'behind']);
    assert.deepEqual([rm.name, rm.removed], ['behind', true]);
    assert.equal((await docker('network', 'inspect', box.dockerNetwork)).code, 1, 'network removed too');
  });
});
