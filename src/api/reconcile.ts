// Turns a sandbox's desired state (the store) into reality, Docker objects and the kernel's egress
// rules, and takes them away again. Rules go in before the container runs, so it never runs
// without them, nor on an engine whose bridges are not where the rules are (engine-here.ts). It
// also finishes what a killed or failed process left half-done: a create whose process is gone is
// rolled back, a removal that could not finish is retried (see recordState).
import { InterruptedError, RemovalError, RuntimeError } from '../core/errors.ts';
import { objectNames, type SandboxRecord } from '../core/sandbox.ts';
import { stillResting, SUBNET_REST_MS } from '../core/subnet-pool.ts';
import type { Runtime } from '../runtime/docker.ts';
import { sandboxLabels } from '../runtime/labels.ts';
import type { Egress } from '../net/egress.ts';
import { assertBridgeHere, assertNoStrayBridge } from '../net/engine-here.ts';
import { TABLE } from '../net/nft-rules.ts';
import { removeSandboxFiles, writeResolvConf } from '../net/resolv-conf.ts';
import type { Store } from '../store/store.ts';
import { processAlive, thisProcess } from '../store/process-ref.ts';
import { createPlannedNetwork } from './address-plan.ts';

export interface ReconcileContext {
  runtime: Runtime;
  home: string;
  egress: Egress;
  signal?: AbortSignal;
  /** Nothing of this sandbox exists yet but its network (create): skip looking. */
  fresh?: boolean;
  /** The egress rules were just put in force (create does it while the network is made). */
  rulesApplied?: boolean;
  /** The store, for the subnets that rest (address-plan.ts). */
  store?: Pick<Store, 'snapshot'>;
}

/** Runs `check`; when it throws, the rules' step settles first (nothing races what follows). */
async function settled(rules: Promise<void>, check: () => void): Promise<void> {
  try {
    check();
  } catch (err) {
    await rules.catch(() => {});
    throw err;
  }
}

function checkAbort(signal?: AbortSignal): void {
  if (signal?.aborted) throw new InterruptedError('interrupted: nothing was left behind');
}

/** Makes the network and container exist and puts the container in the desired state. */
export async function reconcileSandbox(record: SandboxRecord, ctx: ReconcileContext): Promise<void> {
  const { runtime, signal } = ctx;
  const names = objectNames(record.id);
  const labels = sandboxLabels(record.id, record.name, ctx.home, !!record.pooled);
  if (record.removing) throw beingRemoved(record);
  checkAbort(signal);
  // Egress rules are keyed on the bridge's name, so they hold before the network or the container
  // exists: they go in while the engine works, and must be in force before the container starts.
  const rules = ctx.rulesApplied ? Promise.resolve() : ctx.egress.apply(record);
  rules.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled
  let current = ctx.fresh ? undefined : await runtime.inspectContainer(names.container);
  let network = await runtime.sandboxNetwork(record.id);
  // The rules go into this process's namespace: the engine's bridge must be here too (a stat and
  // the interface list, see engine-here.ts). Not for a stop: stopping only makes it safer.
  const willRun = record.desired !== 'stopped';
  if (!current && !network) {
    if (willRun) await settled(rules, () => assertNoStrayBridge(record.id, record.name));
    await createPlannedNetwork(runtime, record.id, labels, !!record.ipv6, ctx.store, signal);
    checkAbort(signal);
    network = await runtime.sandboxNetwork(record.id);
  }
  if (!network) throw new RuntimeError(`the network of sandbox ${record.name} has no IPv4 subnet`);
  if (willRun) await settled(rules, () => assertBridgeHere(record.id, record.name, network));
  if (!current) {
    const resolvConf = writeResolvConf(ctx.home, record.id, network.gateway);
    // Both settle before any failure is raised, so a rollback never races a half-done step.
    const done = await Promise.allSettled([rules, runtime.createSandboxContainer(record, labels, resolvConf)]);
    for (const d of done) if (d.status === 'rejected') throw d.reason;
    current = { state: 'stopped' };
  } else {
    await rules;
  }
  checkAbort(signal);
  switch (record.desired) {
    case 'running':
      if (current.state === 'paused') await runtime.unpauseContainer(names.container);
      else if (current.state === 'stopped') await runtime.startContainer(names.container);
      break;
    case 'paused':
      if (current.state === 'stopped') await runtime.startContainer(names.container);
      if (current.state !== 'paused') await runtime.pauseContainer(names.container);
      break;
    case 'stopped':
      if (current.state === 'paused') await runtime.unpauseContainer(names.container);
      if (current.state !== 'stopped') await runtime.stopContainer(names.container);
      break;
  }
  checkAbort(signal);
}

/** The error for a change to a sandbox whose removal began: it is not brought back. */
export function beingRemoved(r: SandboxRecord): RuntimeError {
  const left = r.removing?.left?.length ? ` (left: ${r.removing.left.join(', ')})` : '';
  return new RuntimeError(`sandbox ${r.name} is being removed${left}: sbx rm ${r.name} finishes it`);
}

/** What removeSandboxObjects could not remove: `left` names each object still there. */
class ObjectsLeft extends RuntimeError {
  readonly left: string[];
  constructor(left: string[], cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause), { cause });
    this.left = left;
  }
}

/**
 * Removes every Docker object of a sandbox and its egress rules; safe to repeat (already gone
 * counts as done). When something cannot go, it throws naming everything still there.
 * `rules: false`: there are none to remove (a create whose rules never went in). `rest`: called
 * with the network's IPv4 subnet before the network goes, to make it rest (see address-plan.ts);
 * when it fails, or the subnet cannot be read, the network stays.
 */
export async function removeSandboxObjects(id: string, ctx: { runtime: Runtime; egress: Egress; home: string }, rules = true, rest?: (subnet: string) => Promise<void>): Promise<void> {
  const names = objectNames(id);
  const table = `egress rules (nft chains and sets *_${id} in table inet ${TABLE})`;
  // Asked while the container goes: the subnet the network frees.
  const subnet = rest ? ctx.runtime.sandboxNetwork(id).then((n) => n?.subnet) : Promise.resolve(undefined);
  subnet.catch(() => {}); // awaited below
  try {
    await ctx.runtime.removeContainer(names.container);
  } catch (err) {
    // While the container may still run, its network and rules stay: it never runs without them.
    throw new ObjectsLeft([`container ${names.container}`, `network ${names.network}`, ...(rules ? [table] : [])], err);
  }
  removeSandboxFiles(ctx.home, id);
  try {
    const freed = await subnet;
    if (freed) await rest!(freed);
  } catch (err) {
    throw new ObjectsLeft([`network ${names.network}`, ...(rules ? [table] : [])], err);
  }
  // With the container gone nothing can send on the bridge: its rules go with the network.
  const [network, egress] = await Promise.allSettled([ctx.runtime.removeNetwork(names.network), rules ? ctx.egress.remove(id) : undefined]);
  const left: string[] = [];
  let cause: unknown;
  if (network.status === 'rejected') {
    left.push(`network ${names.network}`);
    cause ??= network.reason;
  }
  if (egress.status === 'rejected') {
    left.push(table);
    cause ??= egress.reason;
  }
  if (left.length) throw new ObjectsLeft(left, cause);
}

/** Creating records written before creators were recorded count as stale after this long. */
const LEGACY_CREATE_MS = 10 * 60 * 1000;

/**
 * Where a record stands. `creating` / `removing`: a live process works on it. `stale`: the
 * process that was creating or removing it is gone (killed, crashed, a reboot), or a removal gave
 * up with objects left: the reconciler rolls the create back or finishes the removal (a create of
 * the same name does, and the gateway when it starts). `ready`: a sandbox.
 */
export function recordState(r: SandboxRecord, now = Date.now()): 'ready' | 'creating' | 'removing' | 'stale' {
  if (r.removing) return r.removing.by && processAlive(r.removing.by) ? 'removing' : 'stale';
  if (r.creating) {
    if (r.creator) return processAlive(r.creator) ? 'creating' : 'stale';
    return now - Date.parse(r.createdAt) > LEGACY_CREATE_MS ? 'stale' : 'creating';
  }
  return 'ready';
}

/** Marks a stale record (in a store update) as being removed by this process; false when it is not stale. */
export function claimStale(r: SandboxRecord): boolean {
  if (recordState(r) !== 'stale') return false;
  r.removing = { ...r.removing, since: r.removing?.since ?? new Date().toISOString(), by: thisProcess() };
  return true;
}

export interface RemovalContext {
  runtime: Runtime;
  egress: Egress;
  home: string;
  store: Store;
}

/**
 * Removes a sandbox: its objects, then its record. The record says that a removal is under way,
 * and by whom, while the engine works; when objects fail to go the record stays (status
 * `removing`, with what is left and why) and a RemovalError says so: sbx rm, a create of the same
 * name and the gateway's start retry. `claimed`: the caller marked the record already (claimStale).
 * `recordIfAbsent`: a create that never got its record into the store still records what it left.
 * `rules: false`: it has no egress rules (they failed to go in).
 */
export async function removeSandbox(record: SandboxRecord, ctx: RemovalContext, options: { claimed?: boolean; recordIfAbsent?: boolean; rules?: boolean } = {}): Promise<void> {
  const since = record.removing?.since ?? new Date().toISOString();
  // Marked while the engine works, not before it: rm takes no longer than it did.
  const claim = options.claimed
    ? Promise.resolve()
    : ctx.store.update((data) => {
        const r = data.sandboxes[record.id];
        if (r) r.removing = { ...r.removing, since: r.removing?.since ?? since, by: thisProcess() };
      });
  // The subnet rests from before its network goes: no create can take it in between.
  const rest = (subnet: string) =>
    ctx.store.update((data) => {
      data.resting = { ...stillResting(data.resting), [subnet]: Date.now() + SUBNET_REST_MS };
    });
  try {
    await removeSandboxObjects(record.id, ctx, options.rules ?? true, rest);
  } catch (err) {
    await claim.catch(() => {});
    const left = err instanceof ObjectsLeft ? err.left : [`the objects of sandbox ${record.id}`];
    // The engine's or nft's words, without the "could not remove X" that `left` says already.
    const reason = (err as Error).message.replace(/^could not remove [^:]*: /, '');
    let ref: string | undefined;
    await ctx.store.update((data) => {
      let r = data.sandboxes[record.id];
      // A record that never held its name (the name was taken) is reached by its id.
      ref = r ? record.name : record.id;
      if (!r && options.recordIfAbsent) r = data.sandboxes[record.id] = { ...record };
      if (!r) return (ref = undefined);
      delete r.creating;
      delete r.creator;
      r.removing = { since, left, error: reason };
    });
    const kept = ref ? `: sbx ls shows it as removing, and sbx rm ${ref} retries (so does the gateway when it starts)` : '';
    throw new RemovalError(`could not remove ${left.join(', ')} of sandbox ${record.name} (${reason})${kept}`, { id: record.id, name: record.name }, left, { cause: err });
  }
  await claim.catch(() => {});
  await ctx.store.update((data) => {
    delete data.sandboxes[record.id];
  });
}

/**
 * Rolls back every create whose process is gone and retries every removal that did not finish
 * (the gateway calls this when it starts). `onLine` hears what was done, and what failed.
 */
export async function reconcileStale(ctx: RemovalContext, onLine: (line: string) => void = () => {}): Promise<void> {
  const claimed = await ctx.store.update((data, view) => view.sandboxes.filter((r) => recordState(r) === 'stale').map((r) => data.sandboxes[r.id]!).filter(claimStale).map((r) => structuredClone(r)));
  for (const r of claimed) {
    const done = r.creating ? `rolled back the unfinished create of ${r.name} (${r.id})` : `finished removing ${r.name} (${r.id})`;
    await removeSandbox(r, ctx, { claimed: true }).then(
      () => onLine(done),
      (err: Error) => onLine(err.message),
    );
  }
}
