// Where sbx's built bundles are (dist/cli.cjs and the workers beside it): the daemon starts them,
// and the agent's image carries them.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { RuntimeError } from './errors.ts';

/** The CLI bundle (dist/cli.cjs) that runs `gateway run`, found from this module's location. */
export function cliEntry(): string {
  if (process.env.SBX_CLI_ENTRY) return process.env.SBX_CLI_ENTRY;
  let dir = typeof __filename === 'string' ? dirname(__filename) : dirname(new URL(import.meta.url).pathname);
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'dist', 'cli.cjs');
    if (existsSync(candidate)) return candidate;
    if (existsSync(join(dir, 'cli.cjs'))) return join(dir, 'cli.cjs');
    dir = dirname(dir);
  }
  throw new RuntimeError('cannot find dist/cli.cjs to start the gateway: run the build (npm run build)');
}
