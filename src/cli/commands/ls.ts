import type { CommandInput } from '../context.ts';
import { printSandboxTable } from '../render.ts';

export async function run({ opts, io, sbx }: CommandInput): Promise<void> {
  const list = await (await sbx()).list();
  if (opts.json) return io.json(list);
  if (opts.quiet) {
    for (const s of list) io.out(s.id);
    return;
  }
  if (list.length === 0) {
    if (io.isTTY) io.info('No sandboxes. Create one with: sbx create');
    return;
  }
  await printSandboxTable(io, list);
}
