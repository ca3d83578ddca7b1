// The one place that turns a sandbox's desired state (the store) into reality (Docker objects).
// Later layers (egress rules, gateway routes) hook in here too.
import { InterruptedError } from '../core/errors.ts';
import { objectNames, type SandboxRecord } from '../core/sandbox.ts';
import type { Runtime } from '../runtime/docker.ts';
import { sandboxLabels } from '../runtime/labels.ts';

export interface ReconcileContext {
  runtime: Runtime;
  home: string;
  signal?: AbortSignal;
  /** Nothing of this sandbox exists yet but its network (create): skip looking. */
  fresh?: boolean;
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
  let current = ctx.fresh ? undefined : await runtime.inspectContainer(names.container);
  if (!current) {
    if (!ctx.fresh && !(await runtime.networkExists(names.network))) {
      await runtime.createSandboxNetwork(record.id, labels);
      checkAbort(signal);
    }
    await runtime.createSandboxContainer(record, labels);
    checkAbort(signal);
    current = { state: 'stopped' };
  }
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
export async function removeSandboxObjects(id: string, runtime: Runtime): Promise<void> {
  const names = objectNames(id);
  await runtime.removeContainer(names.container);
  await runtime.removeNetwork(names.network);
}
