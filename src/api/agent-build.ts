// The agent's build id: which bundles an agent runs. Light (fs and crypto only): every agent-mode
// command computes it to know whether the running agent is its own.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';
import { cliEntry } from '../core/bundle.ts';

/** The agent image's recipe version (agent-image.ts packContext). */
const RECIPE = 2;

export const AGENT_FILES = ['cli.cjs', 'relay.cjs', 'egress-worker.cjs'] as const;

export interface AgentBundle {
  version: string;
  build: string;
  files: Array<{ name: string; bytes: Buffer }>;
}
const bundles = new Map<string, AgentBundle>();

/** The dist/ bundles and the version they carry, read once per process and directory. */
export function agentBundle(distDir = dirname(cliEntry())): AgentBundle {
  const known = bundles.get(distDir);
  if (known) return known;
  const files = AGENT_FILES.map((name) => {
    const path = join(distDir, name);
    try {
      return { name, bytes: readFileSync(path) };
    } catch {
      throw new RuntimeError(`cannot read ${path} for the agent image: run the build (npm run build)`);
    }
  });
  const version = packageVersion(distDir);
  // RECIPE: bumped when the image's Dockerfile changes, so that agents of the old recipe are replaced.
  const hash = createHash('sha256').update(`${version}\0${process.version}\0${RECIPE}\0`);
  for (const f of files) hash.update(`${f.name}\0${f.bytes.length}\0`).update(f.bytes);
  const bundle = { version, build: hash.digest('hex').slice(0, 12), files };
  bundles.set(distDir, bundle);
  return bundle;
}

/** The bundles' version: the one built in, or (sources run directly) package.json's beside dist/. */
function packageVersion(distDir: string): string {
  if (VERSION !== '0.0.0-dev') return VERSION;
  try {
    return (JSON.parse(readFileSync(join(distDir, '..', 'package.json'), 'utf8')) as { version?: string }).version ?? VERSION;
  } catch {
    return VERSION;
  }
}

/** 12 hex digits over sbx's version, Node's version and the bytes of the agent's bundles. */
export function agentBuildId(distDir?: string): string {
  return agentBundle(distDir).build;
}

