// The one place that turns a sandbox's desired state (the store) into reality: Docker objects and
// the kernel's egress rules. Rules go in before the container runs, so it never runs without them.
import { InterruptedError, RuntimeError } from '../core/errors.ts';
import { objectNames, type SandboxRecord } from '../core/sandbox.ts';
import type { Runtime } from '../runtime/docker.ts';
import { sandboxLabels } from '../runtime/labels.ts';
import type { Egress } from '../net/egress.ts';
import { removeSandboxFiles, writeResolvConf } from '../net/resolv-conf.ts';

export interface ReconcileContext {
  runtime: Runtime;
  home: string;
  egress: Egress;
  signal?: AbortSignal;
  /** Nothing of this sandbox exists yet but its network (create): skip looking. */
  fresh?: boolean;
  /** The egress rules were just put in force (create does it while the network is made). */
  rulesApplied?: boolean;
}

function checkAbort(signal?: AbortSignal): void {
  if (signal?.aborted) throw new InterruptedError('interrupted: nothing was left behind');
}

/** Makes the network and container exist and puts the container in the desired state. */
export async function reconcileSandbox(record: SandboxRecord, ctx: ReconcileContext): Promise<void> {
  const { runtime, signal } = ctx;
  const names = objectNames(record.id);
  const labels = sandboxLabels(record.id, record.name, ctx.home);
  checkAbort(signal);
  // Egress rules are keyed on the bridge's name, so they hold before the network or the container
  // exists: they go in while the engine works, and must be in force before the container starts.
  const rules = ctx.rulesApplied ? Promise.resolve() : ctx.egress.apply(record);
  rules.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled
  let current = ctx.fresh ? undefined : await runtime.inspectContainer(names.container);
  let network = await runtime.sandboxNetwork(record.id);
  if (!current && !network) {
    await runtime.createSandboxNetwork(record.id, labels, !!record.ipv6);
    checkAbort(signal);
    network = await runtime.sandboxNetwork(record.id);
  }
  if (!network) throw new RuntimeError(`the network of sandbox ${record.name} has no IPv4 subnet`);
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

/** Removes every Docker object of a sandbox; safe to repeat (already gone counts as done). */
export async function removeSandboxObjects(id: string, ctx: { runtime: Runtime; egress: Egress; home: string }): Promise<void> {
  const names = objectNames(id);
  await ctx.runtime.removeContainer(names.container);
  // With the container gone nothing can send on the bridge: its rules go with the network.
  const done = await Promise.allSettled([ctx.runtime.removeNetwork(names.network), ctx.egress.remove(id)]);
  for (const d of done) if (d.status === 'rejected') throw d.reason;
  removeSandboxFiles(ctx.home, id);
}
