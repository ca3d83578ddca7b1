// Hidden: values for the shell completion scripts. Sandbox names come from the store alone, so
// completion stays fast and works even when the engine is slow.
import type { CommandInput } from '../context.ts';

export async function run({ args, io, sbx }: CommandInput): Promise<void> {
  const client = await sbx();
  if (args[0] === 'sandboxes') {
    for (const name of await client.sandboxNames()) io.out(name);
  } else if (args[0] === 'images') {
    for (const tag of await client.imageTags().catch(() => [])) io.out(tag);
  }
}
