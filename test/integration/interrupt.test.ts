// Ctrl-C during create leaves nothing behind: no container, network or store entry.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Sbx } from '../../src/api/sbx.ts';
import { InterruptedError } from '../../src/core/errors.ts';
import { Runtime } from '../../src/runtime/docker.ts';
import { sleep, World } from '../helpers.ts';

const world = new World();
after(() => world.cleanup());

describe('interrupting create', () => {
  it('an abort after the network is made rolls everything back (library)', async () => {
    const abort = new AbortController();
    class AbortAfterNetwork extends Runtime {
      override async createSandboxNetwork(id: string, labels: Record<string, string>) {
        await super.createSandboxNetwork(id, labels);
        abort.abort();
      }
    }
    const sbx = new Sbx({ home: world.home, runtime: new AbortAfterNetwork() });
    await assert.rejects(sbx.create({ name: 'aborted', signal: abort.signal }), InterruptedError);
    assert.deepEqual(await world.leftovers(), { containers: [], networks: [] });
    assert.deepEqual(sbx.store.sandboxes(), []);
  });

  it('SIGINT at any moment of `sbx create` leaves either a whole sandbox or nothing', async () => {
    let interrupted = 0;
    for (const delay of [150, 250, 350, 450, 550, 700]) {
      const child = world.spawn(['create', '--name', `intr-${delay}`, '--json']);
      let stderr = '';
      child.stderr!.on('data', (d) => (stderr += d));
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      await sleep(delay);
      child.kill('SIGINT');
      const code = await exited;
      if (code === 130) {
        interrupted++;
        assert.match(stderr, /^error: interrupted/);
      }
      // Whatever the moment, the world holds a whole sandbox or nothing of it.
      const list = await world.json<any[]>(['ls']);
      const left = await world.leftovers();
      if (list.length === 0) {
        assert.deepEqual(left, { containers: [], networks: [] }, `after SIGINT at ${delay}ms (exit ${code})`);
      } else {
        assert.equal(code === 130, false, 'an interrupted create must leave nothing');
        assert.equal(list[0].status, 'running');
        assert.equal(left.containers.length + left.networks.length, 2);
        await world.sbx(['rm', '-f', `intr-${delay}`]);
      }
    }
    assert.ok(interrupted > 0, 'at least one create was interrupted');
  });
});
