// What every command gets: its parsed input, the IO, and the library client (made on demand).
import type { Sbx } from '../api/sbx.ts';
import { IO } from './io.ts';

export interface CommandInput {
  /** Full command path, e.g. "stop" or "image build". */
  command: string;
  /** Positional arguments in declaration order (variadic ones as arrays). */
  args: Array<string | string[] | undefined>;
  opts: Record<string, unknown>;
  /** Everything after "--" (the command to run, for create and exec). */
  rest: string[];
  io: IO;
  sbx(): Promise<Sbx>;
}

export function makeInput(command: string, args: CommandInput['args'], opts: Record<string, unknown>, rest: string[]): CommandInput {
  let client: Sbx | undefined;
  return {
    command,
    args,
    opts,
    rest,
    io: new IO(),
    async sbx() {
      if (!client) {
        const { Sbx } = await import('../api/sbx.ts');
        client = new Sbx();
      }
      return client;
    },
  };
}

export type CommandModule = { run(input: CommandInput): Promise<number | void> };
