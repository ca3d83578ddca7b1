// The integration suite runs three ways (issue 11): SBX_TEST_AS=root (the default: host mode, as
// root on the local engine), `user` (a fresh user in the docker group, so sbx picks the agent), and
// `remote` (a second dockerd in its own network namespace, reached only by its API socket).
// Files written for all three get their world from `modeWorld` and skip what only one mode has.
import type { TestContext } from 'node:test';
import { AgentWorld } from './agent-world.ts';
import { World } from './helpers.ts';
import { loadImages, startRemoteEngine, type RemoteEngine } from './remote-engine.ts';
import { addUser, dockerGroup, removeUser, sweepUsers } from './test-users.ts';

export type TestAs = 'root' | 'user' | 'remote';

function testAs(): TestAs {
  const v = process.env.SBX_TEST_AS ?? 'root';
  if (v !== 'root' && v !== 'user' && v !== 'remote') throw new Error(`SBX_TEST_AS=${v}: expected root, user or remote`);
  return v;
}
export const TEST_AS: TestAs = testAs();

/** What the world of this mode made besides itself (the user, the engine), removed by closeMode. */
const undo: Array<() => Promise<void>> = [];

/**
 * This mode's world. `user`: sbx runs as a new member of the docker group (agent mode, local
 * engine). `remote`: a new engine with the sandboxes' and the agent's root images loaded.
 */
export async function modeWorld(env: Record<string, string> = {}): Promise<World> {
  try {
    return await makeWorld(env);
  } catch (err) {
    await closeMode(); // a file whose world never came has no after() to do it
    throw err;
  }
}

async function makeWorld(env: Record<string, string>): Promise<World> {
  if (TEST_AS === 'root') return new World(env);
  if (TEST_AS === 'user') {
    await sweepUsers();
    const user = await addUser([await dockerGroup()]);
    undo.push(() => removeUser(user.name));
    return new AgentWorld(env, { user });
  }
  const engine: RemoteEngine = await startRemoteEngine();
  undo.push(() => engine.close());
  await loadImages(engine, ['sbx/base:bookworm', 'sbx/agent-root:bookworm-2']);
  return new AgentWorld(env, { dockerHost: engine.dockerHost });
}

/** Removes what modeWorld made besides the world (call after world.cleanup()). */
export async function closeMode(): Promise<void> {
  for (const f of undo.splice(0).reverse()) await f();
}

/** Skips a test that needs the host mode's inside view (its own files, its nft tables, the same kernel). */
export function onlyAs(t: TestContext, modes: TestAs[], why: string): boolean {
  if (modes.includes(TEST_AS)) return false;
  t.skip(`not as ${TEST_AS}: ${why}`);
  return true;
}
