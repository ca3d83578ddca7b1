import { UsageError } from '../../core/errors.ts';
import { renderCompletion } from '../completion.ts';
import type { CommandInput } from '../context.ts';
import { SHELLS } from '../spec.ts';

export async function run({ args, io }: CommandInput): Promise<void> {
  const shell = args[0] as string;
  if (!(SHELLS as readonly string[]).includes(shell)) {
    throw new UsageError(`unknown shell "${shell}": use one of ${SHELLS.join(', ')}`);
  }
  io.stdout.write(renderCompletion(shell as (typeof SHELLS)[number]));
}
