// Where sbx keeps its state: $SBX_HOME, else $XDG_CONFIG_HOME/sbx, else ~/.config/sbx.
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { RuntimeError, UsageError, type SbxError } from '../core/errors.ts';

export function sbxHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SBX_HOME) return resolve(env.SBX_HOME);
  const config = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(config, 'sbx');
}

/** How a message names the home: the user's setting when it comes from SBX_HOME. */
export function describeHome(home: string, env: NodeJS.ProcessEnv = process.env): string {
  return env.SBX_HOME && resolve(env.SBX_HOME) === home ? `SBX_HOME (${home})` : `the sbx home ${home}`;
}

/** What to say about a file-system error `err` met while using the home (or a file in it). */
export function homeError(home: string, err: unknown, doing: string, env: NodeJS.ProcessEnv = process.env): SbxError | undefined {
  const e = err as NodeJS.ErrnoException;
  const where = describeHome(home, env);
  const on = e?.path && e.path !== home ? ` on ${e.path}` : '';
  const elsewhere = env.SBX_HOME ? 'point SBX_HOME at a directory' : 'move that file away or set SBX_HOME to a directory';
  switch (e?.code) {
    // The user's setting names something that cannot be a directory: a usage error (exit 2).
    case 'EEXIST':
      return new UsageError(`${where} is not a directory: ${elsewhere} (sbx creates a missing one)`, { cause: err });
    case 'ENOTDIR':
      return new UsageError(`${where} cannot be a directory: part of its path is a file: ${elsewhere} (sbx creates a missing one)`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new RuntimeError(`${where} is not writable by this user: cannot ${doing} (${e.code}${on}); fix its permissions or point SBX_HOME at a directory you own`, { cause: err });
    case 'EROFS':
      return new RuntimeError(`${where} is on a read-only file system: cannot ${doing}; point SBX_HOME at a writable directory`, { cause: err });
    case 'ENOSPC':
    case 'EDQUOT':
      return new RuntimeError(`no space left for ${where}: cannot ${doing} (${e.code}${on}); free some space`, { cause: err });
    default:
      return undefined;
  }
}

/** Makes the home exist (private to this user); a home that cannot be is said in sbx's words. */
export function prepareHome(home: string): void {
  try {
    mkdirSync(home, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw homeError(home, err, 'create it') ?? err;
  }
}
