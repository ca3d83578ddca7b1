// Wires commander from the command tree in spec.ts. Each command's module is imported only when
// that command runs, so start-up stays fast.
import { Command, Option } from 'commander';
import { COMMANDS, type CommandSpec } from './spec.ts';
import type { CommandModule } from './context.ts';
import { UsageError } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';

const collect = (value: string, previous: string[] = []) => [...previous, value];

const loaders: Record<string, () => Promise<CommandModule>> = {
  create: () => import('./commands/create.ts'),
  ls: () => import('./commands/ls.ts'),
  inspect: () => import('./commands/inspect.ts'),
  lifecycle: () => import('./commands/lifecycle.ts'),
  rm: () => import('./commands/rm.ts'),
  exec: () => import('./commands/exec.ts'),
  'image-build': () => import('./commands/image-build.ts'),
  completion: () => import('./commands/completion.ts'),
  'port-expose': () => import('./commands/port-expose.ts'),
  'port-ls': () => import('./commands/port-ls.ts'),
  'port-rm': () => import('./commands/port-rm.ts'),
  'port-forward': () => import('./commands/port-forward.ts'),
  token: () => import('./commands/token.ts'),
  ca: () => import('./commands/ca.ts'),
  network: () => import('./commands/network.ts'),
  'network-log': () => import('./commands/network-log.ts'),
  'network-check': () => import('./commands/network-check.ts'),
  fetch: () => import('./commands/fetch.ts'),
  gateway: () => import('./commands/gateway.ts'),
  pool: () => import('./commands/pool.ts'),
  agent: () => import('./commands/agent.ts'),
  complete: () => import('./commands/complete.ts'),
};

interface Wiring {
  onExit(code: number): void;
  /** argv after "--", split off before commander parses. */
  rest: string[];
}

function addCommand(parent: Command, spec: CommandSpec, path: string[], wiring: Wiring): void {
  const cmd = parent.command(spec.name, { hidden: spec.hidden }).description(spec.summary);
  const full = [...path, spec.name];
  for (const a of spec.args ?? []) {
    const label = `${a.name}${a.variadic ? '...' : ''}`;
    cmd.argument(a.required ? `<${label}>` : `[${label}]`);
  }
  for (const o of spec.options ?? []) {
    const option = new Option(o.flags, o.description);
    if (o.repeatable) option.argParser(collect);
    cmd.addOption(option);
  }
  if (spec.dashDash) cmd.usage(`[options] ${spec.args?.some((a) => a.name === 'sandbox') ? '[sandbox] ' : ''}-- <command...>`);
  for (const sub of spec.subcommands ?? []) addCommand(cmd, sub, full, wiring);
  if (spec.module) {
    const load = loaders[spec.module]!;
    cmd.action(async (...params: unknown[]) => {
      const self = params[params.length - 1] as Command;
      const args = params.slice(0, spec.args?.length ?? 0) as Array<string | string[] | undefined>;
      if (!spec.dashDash && wiring.rest.length > 0) {
        throw new UsageError(`sbx ${full.join(' ')} takes no command after "--"`);
      }
      const [mod, { makeInput }] = await Promise.all([load(), import('./context.ts')]);
      const code = await mod.run(makeInput(full.join(' '), args, self.opts(), wiring.rest));
      wiring.onExit(typeof code === 'number' ? code : 0);
    });
  }
}

/**
 * The program; with `only`, the name of the command being run, just that command's tree: building
 * all of them costs a command about 5 ms of its start (help, completion and typos get them all).
 */
export function buildProgram(wiring: Wiring, only?: string): Command {
  const program = new Command('sbx')
    .description('Local sandboxes on Docker, with ports behind URLs and live egress policies')
    .version(VERSION, '-v, --version')
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({ outputError: () => {} });
  const wanted = COMMANDS.some((c) => c.name === only) ? COMMANDS.filter((c) => c.name === only) : COMMANDS;
  for (const spec of wanted) addCommand(program, spec, [], wiring);
  // Errors of subcommands too are handed to main() rather than printed by commander.
  for (const c of program.commands) {
    c.exitOverride().configureOutput({ outputError: () => {} });
    for (const s of c.commands) s.exitOverride().configureOutput({ outputError: () => {} });
  }
  return program;
}
