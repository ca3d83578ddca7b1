import type { RemoveResult } from '../../api/sbx.ts';
import { UsageError } from '../../core/errors.ts';
import type { CommandInput } from '../context.ts';
import { confirm, sandboxArgsOrPrompt } from '../prompt.ts';

export async function run(input: CommandInput): Promise<void> {
  const { io, opts } = input;
  const refs = await sandboxArgsOrPrompt(input, input.args[0] as string[] | undefined, 'sbx rm SANDBOX... [--force]');
  const client = await input.sbx();
  const results: RemoveResult[] = [];
  for (const ref of refs) {
    let force = !!opts.force;
    if (!force && io.canPrompt) {
      // Ask before removing something that is still running (only where a person can answer).
      const s = await client.get(ref).catch(() => undefined);
      if (s && (s.status === 'running' || s.status === 'paused')) {
        if (!(await confirm(input, `Sandbox ${s.name} is ${s.status}. Remove it?`))) throw new UsageError(`not removed: ${s.name}`);
        force = true;
      }
    }
    const result = await client.remove(ref, { force });
    results.push(result);
    if (!opts.json) {
      if (io.isTTY) io.success(result.removed ? `Removed ${result.name}` : `${result.name} was already gone`);
      else io.out(result.name);
    }
  }
  if (opts.json) io.json(refs.length === 1 ? results[0] : results);
}
