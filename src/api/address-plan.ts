// Sandbox networks from sbx's address plan (core/subnet-pool.ts): a free /28 of the pool, clear of
// every Docker network and the host's routes. Docker refuses a subnet that overlaps another
// network's, so two creates that pick the same one at once cannot both get it: the loser picks
// again. An rm frees its subnet with its network, and the store keeps the subnet resting a while
// (SUBNET_REST_MS): what still knew the removed sandbox by its address (an nginx worker finishing
// a request) is gone before another sandbox answers there. A create that finds only resting
// subnets free waits for the first to come free.
import { setTimeout as sleep } from 'node:timers/promises';
import { InterruptedError, RuntimeError } from '../core/errors.ts';
import { freeSubnets, SANDBOX_PREFIX, stillResting, SUBNET_REST_MS, subnetPool } from '../core/subnet-pool.ts';
import { hostIPv4Routes } from '../net/host-routes.ts';
import type { Runtime } from '../runtime/docker.ts';
import type { Store } from '../store/store.ts';

const ATTEMPTS = 16;

/** `store`: where the resting subnets are (read at each try); none rest without one. `signal` ends a wait for one. */
export async function createPlannedNetwork(runtime: Runtime, id: string, labels: Record<string, string>, ipv6: boolean, store?: Pick<Store, 'snapshot'>, signal?: AbortSignal): Promise<void> {
  const pool = subnetPool();
  const lost: string[] = [];
  const waitUntil = Date.now() + SUBNET_REST_MS + 1000;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const taken = [...(await runtime.ipv4SubnetsInUse()), ...hostIPv4Routes(), ...lost];
    const rest = stillResting(store?.snapshot().data.resting);
    // node:crypto takes ~15 ms to load: not at start-up of every command that imports this.
    const { randomInt } = process.getBuiltinModule('node:crypto') as typeof import('node:crypto');
    const from = randomInt(pool.count);
    const pick = freeSubnets(pool, [...taken, ...Object.keys(rest)], from).next();
    if (pick.done && Date.now() < waitUntil && !freeSubnets(pool, taken, from).next().done) {
      // Only resting ones are free: the first to come free is taken (not counted as a try).
      const ms = Math.min(Math.min(...Object.values(rest)) - Date.now() + 10, waitUntil - Date.now());
      await sleep(Math.max(10, ms), undefined, { signal }).catch(() => {
        throw new InterruptedError('interrupted while waiting for a resting subnet');
      });
      attempt--;
      continue;
    }
    if (pick.done) {
      throw new RuntimeError(
        `no free /${SANDBOX_PREFIX} subnet left in sbx's address pool ${pool.cidr} (${pool.count} in all; Docker networks and the host's routes take the rest): remove sandboxes, or set SBX_SUBNET_POOL to a larger or another range`,
      );
    }
    try {
      await runtime.createSandboxNetwork(id, labels, ipv6, pick.value);
      return;
    } catch (err) {
      // Another create took it a moment ago (or a network sbx cannot list): the next one.
      if (!/overlap/i.test((err as Error).message)) throw err;
      lost.push(pick.value.subnet);
    }
  }
  throw new RuntimeError(`could not find a free subnet in sbx's address pool ${pool.cidr} after ${ATTEMPTS} tries (each was taken by another network as it was made)`);
}
