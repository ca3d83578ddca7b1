import type { CommandInput } from '../context.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';
import { printPortTable } from '../render.ts';

export async function run(input: CommandInput): Promise<void> {
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, 'sbx port ls SANDBOX');
  const ports = await (await input.sbx()).listPorts(ref);
  if (input.opts.json) return input.io.json(ports);
  if (ports.length === 0 && input.io.isTTY) return input.io.info(`No exposed ports. Expose one with: sbx port expose ${ref} PORT`);
  await printPortTable(input.io, ports);
}
