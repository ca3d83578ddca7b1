import type { CommandInput } from '../context.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';
import { printSandboxDetails } from '../render.ts';

export async function run(input: CommandInput): Promise<void> {
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, 'sbx inspect SANDBOX');
  const sandbox = await (await input.sbx()).get(ref, { showToken: !!input.opts.showToken });
  if (input.opts.json) return input.io.json(sandbox);
  printSandboxDetails(input.io, sandbox);
}
