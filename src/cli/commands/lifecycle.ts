// start, stop, pause and resume: the same shape, one library call each.
import type { SandboxInfo } from '../../core/sandbox.ts';
import type { CommandInput } from '../context.ts';
import { sandboxArgsOrPrompt } from '../prompt.ts';
import { statusText } from '../render.ts';

const VERBS = { start: 'start', stop: 'stop', pause: 'pause', resume: 'resume' } as const;
type Verb = keyof typeof VERBS;

export async function run(input: CommandInput): Promise<void> {
  const verb = input.command as Verb;
  const refs = await sandboxArgsOrPrompt(input, input.args[0] as string[] | undefined, `sbx ${verb} SANDBOX...`);
  const client = await input.sbx();
  const done: SandboxInfo[] = [];
  for (const ref of refs) {
    const sandbox = await client[VERBS[verb]](ref);
    done.push(sandbox);
    if (!input.opts.json) {
      if (input.io.isTTY) input.io.success(`${sandbox.name} is ${statusText(input.io, sandbox.status)}`);
      else input.io.out(sandbox.name);
    }
  }
  // One sandbox named: its object; several: an array of them.
  if (input.opts.json) input.io.json(refs.length === 1 ? done[0] : done);
}
