// Runs HAProxy as the gateway's h2c front (haproxy-config.ts) for the nginx engine on plain HTTP:
// it owns the gateway port and passes each connection to nginx's HTTP/1.1 or HTTP/2 listener.
// Started after nginx, stopped before it; it dies with the gateway, and the gateway stops when it
// exits, as with nginx.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import { diesWithParent } from '../net/dies-with-parent.ts';
import { pollUntil } from './poll.ts';
import { hardOpenFiles } from './open-files.ts';
import { nginxTakesH2c } from './nginx.ts';

/** The HAProxy binary: $SBX_HAPROXY when set (only that), else Debian's. Undefined when there is none. */
export function findHaproxy(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.SBX_HAPROXY) return existsSync(env.SBX_HAPROXY) ? env.SBX_HAPROXY : undefined;
  return ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy'].find((p) => existsSync(p));
}

/**
 * Connections the front may carry at once: `wanted`, or fewer when the hard limit on open files
 * (which HAProxy, two descriptors per connection, cannot raise) is lower; HAProxy refuses to
 * start with a maxconn it cannot hold.
 */
export function frontMaxconn(wanted: number, limits?: string): number {
  const hard = hardOpenFiles(limits);
  return hard === undefined ? wanted : Math.max(64, Math.min(wanted, Math.floor((hard - 200) / 2)));
}


export const H2C_NEEDS_HAPROXY = 'SBX_GATEWAY_H2C=1 needs nginx 1.25.1 or later, or HAProxy in front of an older nginx, for h2c on plain HTTP, and neither is installed: ./scripts/setup builds nginx 1.26 (or apt-get install haproxy), or use SBX_GATEWAY_ENGINE=node or SBX_GATEWAY_TLS=1';

/**
 * Whether a gateway started with this environment needs HAProxy and does not find it: h2c is
 * required, on plain HTTP, from an nginx (`nginxBin`, the engine's) older than 1.25.1.
 */
export function h2cFrontMissing(settings: { tls: boolean; h2c: boolean | 'auto' }, nginxBin: string | undefined, env: NodeJS.ProcessEnv = process.env): boolean {
  return !!nginxBin && !settings.tls && settings.h2c === true && !nginxTakesH2c(nginxBin) && !findHaproxy(env);
}

export class H2cFront {
  /** Called when HAProxy exits on its own after it started (not by stop()). */
  onExit?: (why: string) => void;
  readonly #bin: string;
  readonly #runDir: string;
  #child?: ChildProcess;
  #stderr = '';
  #stopping = false;

  constructor(bin: string, runDir: string) {
    this.#bin = bin;
    this.#runDir = runDir;
  }

  get pidFile(): string {
    return join(this.#runDir, 'haproxy.pid');
  }

  /**
   * Starts HAProxy with `config`, then waits until `ready()` says the port answers through it
   * (HAProxy prints nothing once it listens). Rejects with HAProxy's own last words when it exits.
   */
  async start(config: string, ready: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
    const configPath = join(this.#runDir, 'haproxy.cfg');
    writeFileSync(configPath, config, { mode: 0o600 });
    // -db: in the foreground, so that it is this child. -W: a master that stays root (a change of
    // user would clear its parent-death signal) and ends its worker, which runs as the
    // configuration's user, when it gets that signal or the worker dies.
    const child = spawn(...diesWithParent(this.#bin, ['-W', '-f', configPath, '-db']), { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    this.#child = child;
    if (child.pid) writeFileSync(this.pidFile, `${child.pid}\n`);
    child.stderr!.on('data', (d) => (this.#stderr = (this.#stderr + d).slice(-2000)));
    let started = false;
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) => {
        rmSync(this.pidFile, { force: true });
        const why = `haproxy exited (${code ?? signal}): ${this.#lastWords()}${/Address already in use/.test(this.#stderr) ? ' (address in use)' : ''}`;
        if (started && !this.#stopping) this.onExit?.(why);
        reject(new RuntimeError(why));
      }),
    );
    exited.catch(() => {});
    const deadline = Date.now() + timeoutMs;
    try {
      await Promise.race([
        exited,
        (async () => {
          if (!(await pollUntil(ready, deadline, 50))) throw new RuntimeError(`haproxy did not answer on the gateway port within ${timeoutMs / 1000}s${this.#stderr ? `: ${this.#lastWords()}` : ''}`);
        })(),
      ]);
    } catch (err) {
      await this.stop();
      throw err;
    }
    started = true;
  }

  /** Its last line on stderr, without HAProxy's "[ALERT] (pid) :" prefix. */
  #lastWords(): string {
    const lines = this.#stderr.trim().split('\n').filter((l) => !/\[(NOTICE|WARNING)\]/.test(l));
    return (lines.pop() ?? '').replace(/^\[\w+\]\s+\(\d+\)\s*:\s*/, '');
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM'); // HAProxy's hard stop: it closes what it carries at once
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([gone, new Promise((r) => (timer = setTimeout(r, 3000)))]);
    clearTimeout(timer);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}
