// Runs nginx as the gateway's fast path (see nginx-config.ts): started and reloaded by the Node
// gateway, which waits after each reload until nginx's workers serve the new configuration.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import { BUILT_NGINX, builtNginxSize } from '../core/built-nginx.ts';
import { CONTROL_HOST } from './nginx-config.ts';
import { askGateway } from './ask.ts';
import { diesWithParent } from '../net/dies-with-parent.ts';
import { pollUntil } from './poll.ts';
import { writeAtomic } from './write-atomic.ts';

export { BUILT_NGINX } from '../core/built-nginx.ts';

/**
 * The nginx binary: $SBX_NGINX, else the one setup built (when it runs and only root can change
 * it: a root gateway runs it), else Debian's. Undefined when there is none.
 */
export function findNginx(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.SBX_NGINX && existsSync(env.SBX_NGINX)) return env.SBX_NGINX;
  if (builtNginxUsable()) return BUILT_NGINX;
  return ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p));
}

function builtNginxUsable(): boolean {
  return builtNginxSize() !== undefined && nginxVersion(BUILT_NGINX) !== undefined;
}

const versions = new Map<string, [number, number, number] | undefined>();
/** nginx's version from `nginx -v` ("nginx version: nginx/1.26.3"), or undefined when it says none. */
function nginxVersion(bin: string): [number, number, number] | undefined {
  if (!versions.has(bin)) {
    const out = spawnSync(bin, ['-v'], { encoding: 'utf8', timeout: 5000 });
    const m = /nginx\/(\d+)\.(\d+)\.(\d+)/.exec(`${out.stderr ?? ''}${out.stdout ?? ''}`);
    versions.set(bin, m ? [Number(m[1]), Number(m[2]), Number(m[3])] : undefined);
  }
  return versions.get(bin);
}

/**
 * nginx 1.25.1 and later take the `http2 on;` directive, and with it on a plaintext listener they
 * tell HTTP/2 with prior knowledge (h2c) from HTTP/1.1 by the connection preface, on one port.
 * Older ones (Debian bookworm's 1.22) need the h2c front (HAProxy) for that.
 */
export function nginxTakesH2c(bin: string): boolean {
  const v = nginxVersion(bin);
  if (!v) return false;
  const [major, minor, patch] = v;
  return major > 1 || (major === 1 && (minor > 25 || (minor === 25 && patch >= 1)));
}

/** Where the run directories of unprivileged nginx workers live (/run: a tmpfs, gone at boot). */
const WORKER_RUN_ROOT = '/run/sbx';

/**
 * A fresh directory for what nginx workers running as an unprivileged user must reach (the Node
 * gateway's socket, their temp files), outside SBX_HOME (private to root): root-owned, open to
 * `gid` only (0750). One per home; whatever a gateway of this home left there is removed first.
 */
export function workerRunDir(home: string, gid: number, root = WORKER_RUN_ROOT): string {
  const dir = join(root, createHash('sha256').update(home).digest('hex').slice(0, 12));
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(root, { recursive: true, mode: 0o755 });
  mkdirSync(dir, { mode: 0o700 });
  chownSync(dir, 0, gid);
  chmodSync(dir, 0o750);
  return dir;
}

export class NginxFrontend {
  /**
   * Random per start, answered with the configuration version: a probe that gets it back reached
   * this gateway's nginx, not one of another gateway on the same port.
   */
  readonly instance = randomBytes(9).toString('hex');
  /** Called when nginx exits on its own after it started (not by stop()). */
  onExit?: (why: string) => void;
  #stopping = false;
  readonly #bin: string;
  readonly #runDir: string;
  readonly #host: string;
  readonly #port: number;
  readonly #tls: boolean;
  /** Where the probes ask (behind the h2c front: nginx's control socket), else host and port. */
  readonly #probeSocket?: string;
  #child?: ChildProcess;
  #stderr = '';

  /** `tempDir`: where the temp directories go (nginx, started as root, hands them to its workers' user). */
  constructor(bin: string, runDir: string, host: string, port: number, tempDir = runDir, tls = false, probeSocket?: string) {
    this.#tls = tls;
    this.#probeSocket = probeSocket;
    this.#bin = bin;
    this.#runDir = runDir;
    this.#host = host;
    this.#port = port;
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
    // Private whatever made it before: it holds nginx's probe socket (and, without sbx-gateway, the sockets behind the h2c front).
    chmodSync(runDir, 0o700);
    for (const d of ['nginx-body', 'nginx-proxy', 'nginx-fastcgi', 'nginx-uwsgi', 'nginx-scgi']) mkdirSync(join(tempDir, d), { recursive: true, mode: 0o700 });
  }

  get #configPath(): string {
    return join(this.#runDir, 'nginx.conf');
  }

  async start(config: string, version: number): Promise<void> {
    writeFileSync(this.#configPath, config, { mode: 0o600 });
    const args = ['-p', `${this.#runDir}/`, '-e', join(this.#runDir, 'nginx-error.log'), '-c', this.#configPath];
    // SIGTERM to nginx when the gateway dies, however it dies (kill -9 included).
    // Its own process group (nginx's pid), so that workers a master killed outright left are found.
    const options = { stdio: ['ignore', 'ignore', 'pipe'] as ['ignore', 'ignore', 'pipe'], detached: true };
    const child = spawn(...diesWithParent(this.#bin, args), options);
    this.#child = child;
    child.stderr!.on('data', (d) => (this.#stderr = (this.#stderr + d).slice(-2000)));
    let started = false;
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) => {
        const why = `nginx exited (${code ?? signal}): ${this.#stderr.trim().split('\n').pop() ?? ''}`;
        killGroup(child.pid!); // its workers, when the master was killed outright
        if (started && !this.#stopping) this.onExit?.(why);
        reject(new RuntimeError(why));
      }),
    );
    exited.catch(() => {});
    try {
      await Promise.race([this.#awaitVersion(version), exited]);
    } catch (err) {
      await this.stop();
      throw err;
    }
    started = true;
  }

  /**
   * Writes the new configuration and reloads. With `retire` (a route was removed or changed), it
   * resolves once that is in force: the new workers answer with its version and the old workers
   * have stopped taking connections. Without it (routes only added), it returns at once: until
   * the new workers take over, requests for the new routes reach the Node gateway, which serves
   * them the same way.
   */
  async apply(config: string, version: number, retire: boolean): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null) throw new RuntimeError('nginx is not running');
    const oldWorkers = workersOf(child.pid!);
    // Replaced whole (a rename), never rewritten in place: nginx may still be reading the last
    // one, since an apply that only adds routes does not wait for its reload. Rewritten in place,
    // a 1.5 MB configuration (1,000 sandboxes) was read half old, half new.
    writeAtomic(this.#configPath, config);
    child.kill('SIGHUP');
    if (!retire) return;
    await this.#awaitVersion(version);
    const deadline = Date.now() + 2000;
    while (Date.now() < deadline && oldWorkers.some((pid) => workersOf(child.pid!).includes(pid) && !isShuttingDown(pid))) {
      await new Promise((r) => setTimeout(r, 2));
    }
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    const child = this.#child;
    if (!child || child.exitCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([gone, new Promise((r) => (timer = setTimeout(r, 3000)))]);
    clearTimeout(timer); // a pending timer would keep the stopped gateway alive for nothing
    if (child.exitCode === null) child.kill('SIGKILL');
  }

  async #awaitVersion(version: number, timeoutMs = 10_000): Promise<void> {
    // With a thousand routes nginx needs tens of ms to load them: probed often at first, then less.
    if (await pollUntil(async () => (await this.#probe()) === versionAnswer(version, this.instance), Date.now() + timeoutMs, 40)) return;
    const last = this.#stderr.trim().split('\n').pop();
    throw new RuntimeError(`nginx did not take configuration ${version} within ${timeoutMs / 1000}s${last ? `: ${last}` : ''}`);
  }

  async #probe(): Promise<string | undefined> {
    return probeVersion({ host: this.#host, port: this.#port, tls: this.#tls, ...(this.#probeSocket ? { socketPath: this.#probeSocket } : {}) });
  }
}

/** What nginx's control endpoint answers ("<version> <instance>"), through whatever is asked. */
export async function probeVersion(where: { host: string; port: number; tls?: boolean; socketPath?: string }): Promise<string | undefined> {
  const answer = await askGateway({ ...where, hostHeader: CONTROL_HOST, path: '/_sbx/config-version', timeoutMs: 1000 });
  return answer?.status === 200 ? answer.body.trim() : undefined;
}

/** The configuration version and start token nginx answers with. */
export function versionAnswer(version: number, instance: string): string {
  return `${version} ${instance}`;
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {}
}

/** The worker processes of an nginx master (Linux /proc). */
function workersOf(master: number): number[] {
  try {
    return readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** An old worker that got the reload renames itself "worker process is shutting down". */
function isShuttingDown(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('shutting down');
  } catch {
    return true;
  }
}
