// Ctrl-C during create leaves nothing behind: no container, network or store entry.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LocalSbx as Sbx } from '../../src/api/local-sbx.ts';
import { InterruptedError } from '../../src/core/errors.ts';
import { Runtime } from '../../src/runtime/docker.ts';
import { interruptCreates, World } from '../helpers.ts';

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
    assert.deepEqual(await world.leftovers(), { containers: [], networks: [], tables: [] });
    assert.deepEqual(sbx.store.sandboxes(), []);
  });

  it('SIGINT at any moment of `sbx create` leaves either a whole sandbox or nothing', async () => {
    await interruptCreates(world, 'intr', [150, 250, 350, 450, 550, 700]);
  });
});
