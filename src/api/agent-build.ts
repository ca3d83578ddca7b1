// The agent's build id: which bundles an agent runs. Light (fs and crypto only): every agent-mode
// command computes it to know whether the running agent is its own.
import { createHash } from 'node:crypto';
import { accessSync, constants, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { arch } from 'node:os';
import { dirname, join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';
import { cliEntry } from '../core/bundle.ts';
import { BUILT_NGINX_BIN, BUILT_NGINX_DIR, BUILT_NGINX_STAMP, builtNginxSize } from '../core/built-nginx.ts';

/** The agent image's recipe version (agent-image.ts packContext). 4: nginx 1.26 when built here. */
const RECIPE = 4;

export const AGENT_FILES = ['cli.cjs', 'relay.cjs', 'egress-worker.cjs'] as const;

export interface AgentBundle {
  version: string;
  build: string;
  files: Array<{ name: string; bytes: Buffer }>;
  /**
   * Packages the bundles load from node_modules, to copy under /opt/sbx (read when the image is
   * built): koffi (none when it is not installed here) and node-forge (sbx's CA, for HTTPS).
   */
  modules: ModuleFile[];
  /**
   * nginx 1.26 as setup built it here (sbin/nginx and REVISION, under BUILT_NGINX_DIR), so that the
   * agent's gateway takes h2c on its port without HAProxy, as this host's does. None when it is
   * not built here: the agent then runs Debian's nginx behind HAProxy.
   */
  nginx: ModuleFile[];
}

export interface ModuleFile {
  /** Where it goes under /opt/sbx: node_modules/... */
  name: string;
  path: string;
  size: number;
  /** Its bytes, when they were read with it (the nginx stamp: the image gets what was hashed). */
  bytes?: Buffer;
}

/**
 * The files of koffi that the agent needs to load it (libnftables and nflog in its process: the
 * network log's kernel entries), from where this sbx finds koffi: its loader, and the native
 * module of this machine's architecture (the agent image runs this machine's Node binary too).
 * All of them or none.
 */
export function koffiFiles(distDir: string): ModuleFile[] {
  try {
    const dir = dirname(createRequire(join(distDir, 'cli.cjs')).resolve('koffi'));
    const native = join(dirname(dir), '@koromix', `koffi-linux-${arch()}`);
    const wanted: Array<[string, string]> = [
      ...['package.json', 'index.cjs', 'src/koffi/index.cjs', 'src/koffi/src/static.cjs', 'src/koffi/src/trampolines.cjs'].map((f): [string, string] => [`node_modules/koffi/${f}`, join(dir, f)]),
      ...['package.json', 'index.js', `linux_${arch()}/koffi.node`].map((f): [string, string] => [`node_modules/@koromix/koffi-linux-${arch()}/${f}`, join(native, f)]),
    ];
    return wanted.map(([name, path]) => ({ name, path, size: statSync(path).size }));
  } catch {
    return [];
  }
}

/**
 * node-forge, which the bundle leaves out (it is loaded only where a certificate is made): its
 * package.json and lib/, where its entry is. The agent's gateway makes its CA with it.
 * None when it is not installed beside the bundles.
 */
export function forgeFiles(distDir: string): ModuleFile[] {
  try {
    const dir = dirname(createRequire(join(distDir, 'cli.cjs')).resolve('node-forge/package.json'));
    const lib = readdirSync(join(dir, 'lib')).filter((f) => f.endsWith('.js'));
    return [['package.json', join(dir, 'package.json')], ...lib.map((f) => [`lib/${f}`, join(dir, 'lib', f)])].map(([name, path]) => ({ name: `node_modules/node-forge/${name}`, path: path!, size: statSync(path!).size }));
  } catch {
    // Not installed beside these bundles: the agent's HTTPS then fails at its start, as it would here.
    return [];
  }
}

/**
 * The built nginx (core/built-nginx.ts) when only root can change it, with the revision it was built
 * from: named by their paths under BUILT_NGINX_DIR. Not run here: the agent's own gateway checks
 * that it runs there (`nginx -v`), and uses Debian's nginx behind HAProxy when it does not.
 */
export function builtNginxFiles(dir = BUILT_NGINX_DIR): ModuleFile[] {
  const size = builtNginxSize(dir);
  if (size === undefined) return [];
  try {
    const bin = join(dir, BUILT_NGINX_BIN);
    accessSync(bin, constants.R_OK); // the image build reads it (this may be a docker-group user)
    const stamp = readFileSync(join(dir, BUILT_NGINX_STAMP));
    return [
      { name: `nginx/${BUILT_NGINX_BIN}`, path: bin, size },
      { name: `nginx/${BUILT_NGINX_STAMP}`, path: join(dir, BUILT_NGINX_STAMP), size: stamp.length, bytes: stamp },
    ];
  } catch {
    return [];
  }
}

const bundles = new Map<string, AgentBundle>();

/**
 * The dist/ bundles and the version they carry, with the built nginx of `nginxDir` (tests give
 * another): read once per process and pair of directories.
 */
export function agentBundle(distDir = dirname(cliEntry()), nginxDir = BUILT_NGINX_DIR): AgentBundle {
  const key = `${distDir}\0${nginxDir}`;
  const known = bundles.get(key);
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
  // koffi by its small files' bytes (its version among them) and its native module's size;
  // node-forge by its package.json (its version) and its files' sizes.
  const modules = [...koffiFiles(distDir), ...forgeFiles(distDir)];
  for (const f of modules) hash.update(`${f.name}\0${f.size}\0`).update(f.size < 65_536 && !f.name.startsWith('node_modules/node-forge/lib/') ? readFileSync(f.path) : '');
  // nginx by its revision and its binary's size (read on every agent-mode command: no 1 MB hash).
  const nginx = builtNginxFiles(nginxDir);
  for (const f of nginx) hash.update(`${f.name}\0${f.size}\0`).update(f.bytes ?? '');
  const bundle = { version, build: hash.digest('hex').slice(0, 12), files, modules, nginx };
  bundles.set(key, bundle);
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

/** 12 hex digits over sbx's version, Node's version, the bytes of the agent's bundles and the built nginx's revision. */
export function agentBuildId(distDir?: string, nginxDir?: string): string {
  return agentBundle(distDir, nginxDir).build;
}

