// Sandbox networks from sbx's address plan (core/subnet-pool.ts): a free /28 of the pool, clear of
// every Docker network and the host's routes. Docker refuses a subnet that overlaps another
// network's, so two creates that pick the same one at once cannot both get it: the loser picks
// again. Nothing is kept besides Docker's networks: an rm frees its subnet with its network.
import { randomInt } from 'node:crypto';
import { RuntimeError } from '../core/errors.ts';
import { freeSubnets, SANDBOX_PREFIX, subnetPool } from '../core/subnet-pool.ts';
import { hostIPv4Routes } from '../net/host-routes.ts';
import type { Runtime } from '../runtime/docker.ts';

const ATTEMPTS = 16;

export async function createPlannedNetwork(runtime: Runtime, id: string, labels: Record<string, string>, ipv6: boolean): Promise<void> {
  const pool = subnetPool();
  const lost: string[] = [];
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const taken = [...(await runtime.ipv4SubnetsInUse()), ...hostIPv4Routes(), ...lost];
    const pick = freeSubnets(pool, taken, randomInt(pool.count)).next();
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
