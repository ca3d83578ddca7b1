import type { CommandInput } from '../context.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';

export async function run(input: CommandInput): Promise<void> {
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, 'sbx port rm SANDBOX PORT...');
  const removed = await (await input.sbx()).unexposePorts(ref, (input.args[1] as string[] | undefined) ?? []);
  if (input.opts.json) return input.io.json(removed.map((port) => ({ port, removed: true })));
  if (input.io.isTTY) input.io.success(removed.length ? `No longer routing port ${removed.join(', ')}` : 'Those ports were not exposed');
  else for (const p of removed) input.io.out(String(p));
}
