// Prompts for a missing argument, only when a person is at a terminal; otherwise an error that
// names what to pass.
import { UsageError } from '../core/errors.ts';
import type { CommandInput } from './context.ts';

export async function sandboxArgOrPrompt(input: CommandInput, value: string | undefined, usage: string): Promise<string> {
  if (value) return value;
  const many = await sandboxArgsOrPrompt(input, [], usage);
  return many[0]!;
}

export async function sandboxArgsOrPrompt(input: CommandInput, values: string[] | undefined, usage: string): Promise<string[]> {
  if (values && values.length > 0) return values;
  if (!input.io.canPrompt) throw new UsageError(`missing SANDBOX argument: ${usage}`);
  const sbx = await input.sbx();
  const list = await sbx.list();
  if (list.length === 0) throw new UsageError(`no sandboxes yet: create one with sbx create`);
  const { select } = await import('@inquirer/prompts');
  const choice = await select(
    { message: 'Which sandbox?', choices: list.map((s) => ({ name: `${s.name} (${s.id}, ${s.status})`, value: s.name })) },
    { output: process.stderr },
  );
  return [choice];
}

export async function confirm(input: CommandInput, message: string): Promise<boolean> {
  const { confirm } = await import('@inquirer/prompts');
  return confirm({ message, default: false }, { output: process.stderr });
}
