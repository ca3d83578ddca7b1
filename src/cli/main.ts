// Entry point of the CLI: parse, run, and map errors to exit codes in this one place.
import { buildProgram } from './program.ts';

const USAGE_CODES = new Set([
  'commander.unknownOption', 'commander.unknownCommand', 'commander.missingArgument',
  'commander.optionMissingArgument', 'commander.missingMandatoryOptionValue',
  'commander.excessArguments', 'commander.invalidArgument', 'commander.conflictingOption',
]);

export async function main(argv: string[] = process.argv): Promise<number> {
  // A reader that stops early (`sbx ls | head -1`): stop quietly, as tools killed by SIGPIPE do,
  // not with Node's unhandled "write EPIPE".
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(0);
      throw err;
    });
  }
  let exitCode = 0;
  // "--" ends sbx's own arguments: what follows is the command to run in the sandbox.
  const dd = argv.indexOf('--', 2);
  const rest = dd < 0 ? [] : argv.slice(dd + 1);
  const program = buildProgram({ onExit: (code) => (exitCode = code), rest }, argv[2]);
  // A command whose work can no longer finish (it waits on something that will never answer,
  // and nothing is left to wait on) must not end as a silent success.
  const stranded = () => {
    process.stderr.write('error: sbx stopped waiting for an answer that cannot come (a bug: please report it with SBX_DEBUG=1)\n');
    process.exitCode = 1;
  };
  process.once('beforeExit', stranded);
  try {
    await program.parseAsync(dd < 0 ? argv : argv.slice(0, dd));
    return exitCode;
  } catch (err) {
    return report(err);
  } finally {
    process.off('beforeExit', stranded);
  }
}

function report(err: unknown): number {
  const e = err as { code?: string; exitCode?: number; message?: string };
  if (typeof e?.code === 'string' && e.code.startsWith('commander.')) {
    if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
    if (USAGE_CODES.has(e.code) || e.code === 'commander.error') {
      process.stderr.write(`error: ${String(e.message).replace(/^error:\s*/, '').split('\n')[0]} (see sbx --help)\n`);
      return 2;
    }
    // e.g. a bare "sbx image" prints help and lands here.
    return e.exitCode ?? 1;
  }
  const message = err instanceof Error ? systemMessage(err as NodeJS.ErrnoException) ?? err.message : String(err);
  process.stderr.write(`error: ${message.split('\n')[0]}\n`);
  // What else the user must know (e.g. what a failed create's rollback left behind): a line each.
  for (const w of (err as { warnings?: unknown }).warnings instanceof Array ? (err as { warnings: string[] }).warnings : []) {
    process.stderr.write(`warning: ${String(w).split('\n')[0]}\n`);
  }
  if (process.env.SBX_DEBUG === '1' && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  return typeof e?.exitCode === 'number' ? e.exitCode : 1;
}

/**
 * A system error that no sbx code put in its own words (a bug to fix where it arises), said at
 * least in plain words: `could not mkdir /x: file already exists (EEXIST)`, not Node's
 * `EEXIST: file already exists, mkdir '/x'`.
 */
export function systemMessage(err: NodeJS.ErrnoException): string | undefined {
  if (typeof err.code !== 'string' || !/^E[A-Z0-9]+$/.test(err.code) || !err.syscall || (err as { exitCode?: unknown }).exitCode !== undefined) return undefined;
  const what = /^(?:\w+ )?E[A-Z0-9]+: (.*?)(?:, \w+(?: '.*')?)?$/.exec(err.message)?.[1] ?? err.message;
  return `could not ${err.syscall}${err.path ? ` ${err.path}` : ''}: ${what} (${err.code})`;
}
