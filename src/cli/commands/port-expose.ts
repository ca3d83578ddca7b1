import { UsageError } from '../../core/errors.ts';
import type { CommandInput } from '../context.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';
import { printPortTable } from '../render.ts';

export async function run(input: CommandInput): Promise<void> {
  const { opts, io } = input;
  if (opts.public && opts.private) throw new UsageError('--public and --private exclude each other: pick one');
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, 'sbx port expose SANDBOX PORT...');
  const ports = (input.args[1] as string[] | undefined) ?? [];
  const exposed = await (await input.sbx()).exposePorts(ref, ports, { public: !opts.private, ...(opts.domain !== undefined ? { domain: String(opts.domain) } : {}) });
  if (opts.json) return io.json(exposed);
  await printPortTable(io, exposed);
}
