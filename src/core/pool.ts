// The warm pool's model (pure): pre-created, running sandboxes that `create` claims instead of
// making one. The store keeps the pool's size and its entries; an entry is a sandbox that is not
// yet anyone's (no name, invisible to ls). See src/api/pool.ts for the work.
import { UsageError } from './errors.ts';
import type { NetworkPolicy } from './network-policy.ts';
import { byCreation, type ProcessRef } from './sandbox.ts';

/** The most pooled sandboxes a home keeps (each is a running container with its network). */
export const MAX_POOL_SIZE = 64;

/**
 * How long refills wait after a claim while a ready sandbox is left. Making a container keeps both
 * cores of a small machine busy, and the claiming command's process still has to print its answer
 * and exit: started at once, the refill added about 13 ms to the pooled create (hand A/B, 15 runs
 * each, twice).
 */
export const REFILL_AFTER_CLAIM_MS = 300;

/**
 * One pooled sandbox. `creating`: its container is being made (by `by`); `ready`: running and
 * claimable; `removing`: being taken away (a smaller pool, a dead container, `pool set 0`). A
 * `creating` or `removing` entry whose process is gone is stale: the reconciler removes it.
 */
export interface PoolEntry {
  id: string;
  createdAt: string;
  state: 'creating' | 'ready' | 'removing';
  by?: ProcessRef;
}

export interface PoolData {
  /** How many ready sandboxes to keep; 0 is off. */
  size: number;
  entries: Record<string, PoolEntry>;
  /** The last refill that failed (the refill waits before it tries again). */
  error?: { message: string; at: string };
}

export const EMPTY_POOL: PoolData = { size: 0, entries: {} };

/** What `sbx pool status` prints. */
export interface PoolStatus {
  /** The size asked for (0: off). */
  size: number;
  /** Running and claimable now. */
  ready: number;
  /** Being made (refill). */
  creating: number;
  /** Being taken away. */
  removing: number;
  /** The pooled sandboxes' ids (Docker objects are named sbx-<id>). */
  ids: string[];
  /** The last refill that failed, if the pool is short because of it. */
  error?: { message: string; at: string };
}

/** Pooled sandboxes run under this policy until a claim gives them theirs: nothing out, no DNS. */
export const POOLED_POLICY: NetworkPolicy = { mode: 'block-all', allowOut: [], denyOut: [], allowPorts: [], denyPorts: [] };

/** `sbx pool set N`: a whole number from 0 (off) to MAX_POOL_SIZE. */
export function parsePoolSize(value: string | number): number {
  const s = String(value).trim();
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!(n >= 0 && n <= MAX_POOL_SIZE)) {
    throw new UsageError(`invalid pool size "${value}": accepted: a whole number from 0 (off) to ${MAX_POOL_SIZE}`);
  }
  return n;
}

/** The shape of a create, as far as the pool cares. */
export interface CreateShape {
  image?: string;
  command?: readonly string[];
  ipv6?: boolean;
}

/**
 * Why a create cannot claim a pooled sandbox (undefined: it can). A pooled container was made with
 * the default image, the idle command and an IPv4-only network; what cannot change on a running
 * container is made fresh.
 */
export function unclaimableReason(shape: CreateShape, defaultImage: string): string | undefined {
  if (shape.image !== undefined && shape.image !== defaultImage) return 'another image';
  if (shape.command && shape.command.length > 0) return 'a main command';
  if (shape.ipv6) return 'IPv6';
  return undefined;
}

export function poolStatus(pool: PoolData): PoolStatus {
  const entries = byCreation(Object.values(pool.entries));
  const count = (state: PoolEntry['state']) => entries.filter((e) => e.state === state).length;
  return {
    size: pool.size,
    ready: count('ready'),
    creating: count('creating'),
    removing: count('removing'),
    ids: entries.map((e) => e.id),
    ...(pool.error ? { error: pool.error } : {}),
  };
}

/** How many entries to add now: the pool's shortfall (removals do not count), at most `parallel`. */
export function refillCount(pool: PoolData, parallel: number): number {
  const kept = Object.values(pool.entries).filter((e) => e.state !== 'removing').length;
  return Math.max(0, Math.min(parallel, pool.size - kept));
}

/** Ready entries beyond the size, oldest first: what a smaller pool takes away. */
export function surplus(pool: PoolData): PoolEntry[] {
  const kept = Object.values(pool.entries).filter((e) => e.state !== 'removing');
  const over = kept.length - pool.size;
  if (over <= 0) return [];
  return byCreation(kept.filter((e) => e.state === 'ready')).slice(0, over);
}

/** The entry a claim takes: the oldest ready one (every one is fresh: none was ever claimed). */
export function pickReady(pool: PoolData, skip: ReadonlySet<string> = new Set()): PoolEntry | undefined {
  return byCreation(Object.values(pool.entries).filter((e) => e.state === 'ready' && !skip.has(e.id)))[0];
}
