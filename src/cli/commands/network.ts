// sbx network show|update|block|unblock: a sandbox's egress policy.
import { readFileSync } from 'node:fs';
import { UsageError } from '../../core/errors.ts';
import type { NetworkPolicy, NetworkPolicyInput } from '../../core/network-policy.ts';
import type { CommandInput } from '../context.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';
import { networkPairs } from '../render.ts';

/**
 * Repeated flags, with commas splitting too ("--allow-out a.com,b.com"); "@FILE" reads entries from
 * a file (one per line or comma-separated, # comments), "@-" from stdin: lists of any length.
 * Blank lines of a file are skipped; an empty value or an empty entry between commas is a mistake
 * (a variable that expanded to nothing, a doubled comma) and is refused, naming the flag.
 */
function list(value: unknown, flag: string): string[] {
  const entries: string[] = [];
  for (const raw of (value as string[] | undefined) ?? []) {
    if (raw.trim() === '') throw new UsageError(`${flag} was given an empty value: name an entry, or leave ${flag} out`);
    if (raw.startsWith('@')) {
      const source = raw === '@-' ? 'stdin' : raw.slice(1);
      readEntries(raw.slice(1)).forEach((line, i) => {
        if (line.trim() !== '') entries.push(...split(line, `${flag} ${source} line ${i + 1}`));
      });
    } else {
      entries.push(...split(raw, flag));
    }
  }
  return entries;
}

function split(text: string, where: string): string[] {
  const parts = text.split(',').map((v) => v.trim());
  if (parts.some((p) => p === '')) throw new UsageError(`empty entry in ${where} "${text.trim()}": remove the extra comma`);
  return parts;
}

function readEntries(path: string): string[] {
  try {
    return readFileSync(path === '-' ? 0 : path, 'utf8')
      .split('\n')
      .map((line) => line.replace(/#.*$/, ''));
  } catch (err) {
    throw new UsageError(`cannot read entries from ${path === '-' ? 'stdin' : path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

export function policyInputFromOptions(opts: Record<string, unknown>, mode?: string): NetworkPolicyInput {
  return {
    mode: mode ?? (opts.mode as string | undefined),
    allowOut: list(opts.allowOut, '--allow-out'),
    denyOut: list(opts.denyOut, '--deny-out'),
    allowPorts: list(opts.allowPort, '--allow-port'),
    denyPorts: list(opts.denyPort, '--deny-port'),
  };
}

export async function run(input: CommandInput): Promise<void> {
  const verb = input.command.split(' ')[1] as 'show' | 'update' | 'block' | 'unblock';
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, `sbx network ${verb} SANDBOX`);
  const sbx = await input.sbx();
  let policy: NetworkPolicy;
  if (verb === 'show') policy = await sbx.getNetwork(ref);
  else if (verb === 'block') policy = await sbx.blockNetwork(ref);
  else if (verb === 'unblock') policy = await sbx.unblockNetwork(ref);
  else policy = await sbx.updateNetwork(ref, policyInputFromOptions(input.opts));
  if (input.opts.json) return input.io.json(policy);
  if (verb !== 'show' && input.io.isTTY) input.io.success(`Egress policy of ${(await sbx.resolve(ref)).name} is in force`);
  input.io.details(networkPairs(policy));
}
