import type { CommandInput } from '../context.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';

export async function run(input: CommandInput): Promise<number> {
  const { opts, rest } = input;
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, 'sbx exec SANDBOX -- CMD...');
  const client = await input.sbx();
  const tty = !!opts.tty && !!process.stdout.isTTY;
  const stdin = opts.interactive ? process.stdin : undefined;
  const rawMode = tty && stdin && process.stdin.isTTY;
  if (rawMode) process.stdin.setRawMode(true);
  try {
    return await client.exec(ref, {
      command: rest,
      env: (opts.env as string[] | undefined) ?? [],
      workdir: opts.workdir as string | undefined,
      tty,
      stdin,
      detach: !!opts.detach,
      size: tty ? { rows: process.stdout.rows, columns: process.stdout.columns } : undefined,
      onStart: (control) => {
        if (tty) process.stdout.on('resize', () => control.resize({ rows: process.stdout.rows, columns: process.stdout.columns }));
      },
    });
  } finally {
    if (rawMode) process.stdin.setRawMode(false);
    // A forwarded stdin would otherwise keep the process alive after the command ends.
    if (stdin) process.stdin.destroy();
  }
}
