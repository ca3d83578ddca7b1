// Where sbx keeps its state: $SBX_HOME, else $XDG_CONFIG_HOME/sbx, else ~/.config/sbx.
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export function sbxHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SBX_HOME) return resolve(env.SBX_HOME);
  const config = env.XDG_CONFIG_HOME || join(homedir(), '.config');
  return join(config, 'sbx');
}
