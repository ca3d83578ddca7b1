// The warm pool: sandboxes made ahead of time (default image, idle, block-all with no DNS), kept
// running and claimed by `create` instead of making one. The store holds the pool's size and its
// entries (core/pool.ts); a pooled sandbox has its final id from the start, so its Docker objects
// and egress rules are those of the sandbox it becomes. A claim moves the entry into the
// sandboxes as a record being created (its creator named, as any create's), in one store update:
// two claims never get the same entry, and a claim whose process dies is a stale create that the
// reconciler rolls back (removed for good: pooled sandboxes are never recycled).
import { RuntimeError } from '../core/errors.ts';
import { newId } from '../core/names.ts';
import { DEFAULT_PIDS_LIMIT } from '../core/options.ts';
import { objectNames, type SandboxRecord } from '../core/sandbox.ts';
import { EMPTY_POOL, pickReady, poolStatus, POOLED_POLICY, REFILL_AFTER_CLAIM_MS, refillCount, surplus, type PoolData, type PoolEntry, type PoolStatus } from '../core/pool.ts';
import type { ContainerSummary, Runtime } from '../runtime/docker.ts';
import { sandboxLabels } from '../runtime/labels.ts';
import type { Egress } from '../net/egress.ts';
import { StoreMark, type Store, type StoreData } from '../store/store.ts';
import { processAlive, thisProcess } from '../store/process-ref.ts';
import { createPlannedNetwork } from './address-plan.ts';
import { reconcileSandbox, removeSandboxObjects } from './reconcile.ts';

export interface PoolContext {
  runtime: Runtime;
  egress: Egress;
  home: string;
  store: Store;
}

/** Pooled sandboxes made at once by a refill (this machine has 2 cores). */
const REFILL_PARALLEL = 2;
/** After a refill failed (no image, no subnet...), the next try waits this long. */
const RETRY_MS = 30_000;
/** An unchanged store that needed no refill is looked at again after this long anyway. */
const IDLE_RECHECK_MS = 10_000;

/** A claimed entry whose container does not run (it died, or was removed): taken out, not handed out. */
export class PooledSandboxGone extends RuntimeError {}

/** The record of a pooled sandbox before its claim: the common shape of a create. */
export function pooledRecord(id: string, image: string, createdAt = new Date().toISOString()): SandboxRecord {
  return { id, name: id, image, createdAt, command: [], env: {}, memory: 0, cpus: 0, pidsLimit: DEFAULT_PIDS_LIMIT, desired: 'running', network: POOLED_POLICY, pooled: true };
}

function poolOf(data: StoreData): PoolData {
  data.pool ??= { ...EMPTY_POOL, entries: {} };
  return data.pool;
}

/** A creating or removing entry whose process is gone (or a removal that gave up). */
function staleEntry(e: PoolEntry): boolean {
  return e.state !== 'ready' && (!e.by || !processAlive(e.by));
}

export class WarmPool {
  readonly #store: Store;
  readonly #image: string;
  #filling?: Promise<void>;
  #retryAt = 0;
  /** The store as it was when it last needed no refill. */
  readonly #idle = new StoreMark(IDLE_RECHECK_MS);
  /** What the pool did and what failed (the gateway's log). */
  onLine: (line: string) => void = () => {};
  /** A claim took a pooled sandbox: refills wait `quietMs` (the daemon's refill loop kicks one then). */
  onClaimed: (quietMs: number) => void = () => {};
  /** Until then (performance.now()), no refill starts while a ready sandbox is left: REFILL_AFTER_CLAIM_MS. */
  #quietUntil = 0;

  constructor(store: Store, image: string) {
    this.#store = store;
    this.#image = image;
  }

  status(): PoolStatus {
    return poolStatus(this.#store.pool());
  }

  /** Sets the size; a smaller pool's surplus is removed before this resolves. */
  async set(size: number, ctx: PoolContext): Promise<PoolStatus> {
    await this.#store.update((data) => {
      const pool = poolOf(data);
      pool.size = size;
      delete pool.error;
    });
    this.#retryAt = 0;
    // A refill under way sees the new size for its next sandboxes; what it is making it finishes.
    await this.#filling?.catch(() => {});
    await this.#trim(ctx);
    return this.status();
  }

  /** Makes sandboxes until the pool has its size (one refill at a time); resolves when done. */
  fill(ctx: () => Promise<PoolContext>): Promise<void> {
    if (this.#filling) return this.#filling;
    // Called every second: a store unchanged since it needed nothing is not parsed again (a
    // thousand sandboxes' records take milliseconds), but for a look every IDLE_RECHECK_MS.
    const signature = this.#store.signature();
    if (!this.#idle.due(signature)) return Promise.resolve();
    const pool = this.#store.pool();
    if (Date.now() < this.#retryAt) return Promise.resolve();
    // Just after a claim the claiming command is still printing and exiting; an empty pool waits for nothing.
    if (performance.now() < this.#quietUntil && pickReady(pool, new Set())) return Promise.resolve();
    if (refillCount(pool, 1) === 0 && surplus(pool).length === 0) {
      this.#idle.seen(signature);
      return Promise.resolve();
    }
    this.#idle.clear();
    this.#filling = (async () => {
      try {
        await this.#fillLoop(await ctx());
      } finally {
        this.#filling = undefined;
      }
    })();
    return this.#filling;
  }

  async #fillLoop(ctx: PoolContext): Promise<void> {
    for (;;) {
      const ids = await this.#store.update((data) => {
        const pool = poolOf(data);
        const made: string[] = [];
        for (let i = refillCount(pool, REFILL_PARALLEL); i > 0; i--) {
          const id = newId();
          pool.entries[id] = { id, createdAt: new Date().toISOString(), state: 'creating', by: thisProcess() };
          made.push(id);
        }
        return made;
      });
      if (ids.length === 0) break;
      const done = await Promise.allSettled(ids.map((id) => this.#make(id, ctx)));
      const failed = done.find((d): d is PromiseRejectedResult => d.status === 'rejected');
      if (failed) {
        const message = (failed.reason as Error).message;
        this.#retryAt = Date.now() + RETRY_MS;
        this.onLine(`pool: could not make a pooled sandbox (${message}): trying again in ${RETRY_MS / 1000}s`);
        await this.#store.update((data) => {
          poolOf(data).error = { message, at: new Date().toISOString() };
        });
        break;
      }
    }
    await this.#trim(ctx);
  }

  /** One pooled sandbox: network and block-all rules at once, then the running container. */
  async #make(id: string, ctx: PoolContext): Promise<void> {
    const record = pooledRecord(id, this.#image);
    const labels = sandboxLabels(id, id, ctx.home, true);
    const settle = (p: Promise<void>) => p.then(() => undefined, (err: unknown) => err);
    const network = settle(createPlannedNetwork(ctx.runtime, id, labels, false, ctx.store));
    const rules = settle(ctx.egress.apply(record));
    try {
      const error = (await network) ?? (await rules);
      if (error) throw error;
      await reconcileSandbox(record, { ...ctx, fresh: true, rulesApplied: true });
      const ready = await this.#store.update((data) => {
        const e = poolOf(data).entries[id];
        if (e?.state !== 'creating') return false;
        e.state = 'ready';
        delete e.by;
        return true;
      });
      if (!ready) await this.#discard(id, ctx); // taken away meanwhile (a reconciler thought it stale)
      else this.onLine(`pool: made pooled sandbox ${id}`);
    } catch (err) {
      await network;
      await this.#discard(id, ctx, (await rules) === undefined);
      throw err;
    }
  }

  /** Removes a pooled sandbox's objects, then its entry; an entry it cannot remove stays (removing, stale). */
  async #discard(id: string, ctx: PoolContext, rules = true): Promise<void> {
    try {
      await removeSandboxObjects(id, ctx, rules);
    } catch (err) {
      this.onLine(`pool: could not remove pooled sandbox ${id} (${(err as Error).message}): the gateway retries when it starts`);
      await this.#store.update((data) => {
        const e = poolOf(data).entries[id];
        if (e) {
          e.state = 'removing';
          delete e.by;
        }
      });
      return;
    }
    await this.#store.update((data) => {
      delete poolOf(data).entries[id];
    });
  }

  /** Removes the ready entries beyond the size. */
  async #trim(ctx: PoolContext): Promise<void> {
    const doomed = await this.#store.update((data) => {
      const pool = poolOf(data);
      return surplus(pool).map((e) => {
        pool.entries[e.id] = { ...e, state: 'removing', by: thisProcess() };
        return e.id;
      });
    });
    await Promise.all(doomed.map((id) => this.#discard(id, ctx)));
  }

  /**
   * Takes a ready entry for `draft` (a record being created, without its id) in one store update:
   * the entry leaves the pool and its id becomes a sandbox of that name. Undefined when none is
   * ready, or when a record of that name exists (the plain create reports or finishes it).
   */
  async take(draft: SandboxRecord, skip: ReadonlySet<string>): Promise<SandboxRecord | undefined> {
    if (!pickReady(this.#store.pool(), skip)) return undefined; // no lock when there is nothing to take
    const taken = await this.#store.update((data, view): SandboxRecord | undefined => {
      const pool = poolOf(data);
      if (view.sandboxes.some((r) => r.name === draft.name)) return undefined;
      const entry = pickReady(pool, skip);
      if (!entry) return undefined;
      delete pool.entries[entry.id];
      const record: SandboxRecord = { ...draft, id: entry.id, pooled: true };
      data.sandboxes[entry.id] = record;
      return record;
    });
    if (taken) {
      this.#quietUntil = performance.now() + REFILL_AFTER_CLAIM_MS;
      this.onClaimed(REFILL_AFTER_CLAIM_MS);
    }
    return taken;
  }

  /**
   * Makes a taken sandbox the one asked for: its policy in force (before anything else), then its
   * limits (a live update). Resolves with its container's state; PooledSandboxGone when it does
   * not run.
   */
  async prepare(record: SandboxRecord, ctx: PoolContext): Promise<ContainerSummary> {
    const container = objectNames(record.id).container;
    const [, state] = await Promise.all([ctx.egress.apply(record), ctx.runtime.inspectContainer(container)]);
    if (state?.state !== 'running') throw new PooledSandboxGone(`pooled sandbox ${record.id} is ${state?.state ?? 'gone'}`);
    if (record.memory || record.cpus || (record.pidsLimit ?? DEFAULT_PIDS_LIMIT) !== DEFAULT_PIDS_LIMIT) {
      await ctx.runtime.updateLimits(container, { memory: record.memory, cpus: record.cpus, pidsLimit: record.pidsLimit ?? DEFAULT_PIDS_LIMIT });
    }
    return state;
  }

  /** The records of the pooled sandboxes that have rules (ready, or being made), as their rules are written (block-all, no DNS). */
  ruledRecords(): SandboxRecord[] {
    return Object.values(this.#store.pool().entries)
      .filter((e) => e.state !== 'removing')
      .map((e) => pooledRecord(e.id, this.#image, e.createdAt));
  }

  /**
   * At the gateway's start: entries whose refill or removal died are removed, and so are ready
   * ones whose container no longer runs (never started again: a pooled sandbox is always fresh);
   * the rules of the others are put back.
   */
  async reconcile(ctx: PoolContext, onLine: (line: string) => void): Promise<void> {
    const stale = await this.#store.update((data) => {
      const pool = poolOf(data);
      return Object.values(pool.entries)
        .filter(staleEntry)
        .map((e) => {
          pool.entries[e.id] = { ...e, state: 'removing', by: thisProcess() };
          return e.id;
        });
    });
    const ready = Object.values(this.#store.pool().entries).filter((e) => e.state === 'ready');
    const containers = ready.length ? await ctx.runtime.listSandboxContainers(ctx.home) : new Map<string, ContainerSummary>();
    const dead = ready.filter((e) => containers.get(objectNames(e.id).container)?.state !== 'running').map((e) => e.id);
    const gone = await this.#store.update((data) => {
      const pool = poolOf(data);
      return dead.filter((id) => {
        const e = pool.entries[id];
        if (e?.state !== 'ready') return false;
        pool.entries[id] = { ...e, state: 'removing', by: thisProcess() };
        return true;
      });
    });
    for (const id of [...stale, ...gone]) {
      await this.#discard(id, ctx);
      onLine(`removed pooled sandbox ${id} (${stale.includes(id) ? 'its refill or removal did not finish' : 'its container no longer ran'})`);
    }
    const alive = ready.filter((e) => !dead.includes(e.id));
    await Promise.all(alive.map((e) => ctx.egress.apply(pooledRecord(e.id, this.#image)).catch((err: Error) => onLine(`could not restore the rules of pooled sandbox ${e.id}: ${err.message}`))));
  }
}
