// Starting and stopping the background gateway: one per SBX_HOME, with its pid, address and log
// in SBX_HOME. Commands that need the gateway call ensureGateway().
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { RuntimeError, UsageError } from '../core/errors.ts';
import { cliEntry } from '../core/bundle.ts';
export { cliEntry };
import { gatewayFiles, gatewaySettings, type GatewayState } from './settings.ts';
import { alive, runningGateway } from './state.ts';
import { ServedCertificate } from './served-certificate.ts';
import { DaemonClient, unixTransport } from '../daemon-client/client.ts';
import { GATEWAY_THREADPOOL } from '../daemon-client/protocol.ts';

/** `health` on the gateway's control socket: resolves true when it answers ok. */
export async function probeGateway(s: Pick<GatewayState, 'control'>, timeoutMs = 1000): Promise<boolean> {
  if (!s.control) return false;
  try {
    const health = await new DaemonClient(unixTransport(s.control)).request<{ ok?: boolean }>('health', {}, { timeoutMs });
    return health?.ok === true;
  } catch {
    return false;
  }
}

/**
 * Tells a running gateway to re-read the store now, over its control socket; resolves when it
 * has, or when none runs (the next one reads the store). A gateway that could not apply the
 * change stops and says so: that error is the caller's, whose change is saved but was not in force.
 */
export async function reloadGateway(s: GatewayState | undefined, changed?: string[], options: { policiesOnly?: boolean; portsOnly?: boolean } = {}): Promise<void> {
  if (!s?.control) return;
  await new DaemonClient(unixTransport(s.control)).request('reload', { ...(changed ? { changed } : {}), ...(options.policiesOnly ? { policiesOnly: true } : {}), ...(options.portsOnly ? { portsOnly: true } : {}) }, { timeoutMs: 30_000 }).catch((err: { unreachable?: boolean }) => {
    if (!err.unreachable) throw err;
  });
}


const START_TIMEOUT_MS = 10_000;
const START_MS_PER_SANDBOX = 20;

/** How many sandboxes the store holds (0 when it cannot be read: the gateway will say why). */
function sandboxCount(home: string): number {
  try {
    return Object.keys((JSON.parse(readFileSync(join(home, 'state.json'), 'utf8')) as { sandboxes?: object }).sandboxes ?? {}).length;
  } catch {
    return 0;
  }
}

/** Starts the gateway in the background unless one runs; resolves once it answers. */
export async function ensureGateway(home: string, timeoutMs?: number): Promise<GatewayState> {
  const running = runningGateway(home);
  if (running) return running;
  // It puts every sandbox's rules back before it answers: longer with more of them.
  timeoutMs ??= START_TIMEOUT_MS + START_MS_PER_SANDBOX * sandboxCount(home);
  const { default: lockfile } = await import('proper-lockfile');
  const files = gatewayFiles(home);
  // Another process may hold the lock for as long as its start may take.
  const release = await lockfile.lock(home, { lockfilePath: files.lock, realpath: false, stale: 15_000, retries: { retries: Math.ceil((timeoutMs + 10_000) / 200), minTimeout: 20, maxTimeout: 200 } });
  try {
    const again = runningGateway(home);
    if (again) return again;
    // Validate the environment before forking: a bad setting is a usage error here, not a daemon that dies.
    const settings = gatewaySettings();
    const { findNginx } = await import('./nginx.ts');
    const { h2cFrontMissing, H2C_NEEDS_HAPROXY } = await import('./h2c-front.ts');
    if (h2cFrontMissing(settings, process.env.SBX_GATEWAY_ENGINE !== 'node' ? findNginx() : undefined)) throw new UsageError(H2C_NEEDS_HAPROXY);
    if (settings.tls) {
      const ca = await import('../api/ca.ts');
      if (process.env.SBX_TLS_CERT || process.env.SBX_TLS_KEY) ca.checkUserCertificate(process.env);
      else {
        const problem = ca.caDomainProblem(settings.domain);
        if (problem) throw new UsageError(problem);
      }
    }
    const logStart = existsSync(files.log) ? statSync(files.log).size : 0;
    const out = openSync(files.log, 'a');
    const child = spawn(process.execPath, [cliEntry(), 'gateway', 'run'], {
      detached: true,
      stdio: ['ignore', out, out],
      env: { ...process.env, SBX_HOME: home, UV_THREADPOOL_SIZE: GATEWAY_THREADPOOL },
    });
    closeSync(out);
    child.unref();
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const s = runningGateway(home);
      if (s && s.pid === child.pid && (await probeGateway(s))) return s;
      if (child.exitCode !== null || !alive(child.pid!)) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    // What this start wrote: its own `error: ...` line says why, else the last lines.
    const written = existsSync(files.log) ? readFileSync(files.log).subarray(logStart).toString('utf8').trim().split('\n') : [];
    const error = written.filter((l) => l.startsWith('error: ')).pop()?.slice('error: '.length);
    const tail = error ?? written.slice(-3).join(' | ');
    try {
      process.kill(child.pid!, 'SIGTERM');
    } catch {}
    throw new RuntimeError(`the gateway did not start${tail ? `: ${tail}` : ''} (log: ${files.log})`);
  } finally {
    await release();
  }
}

/** Stops the gateway of this home; resolves true when one was running. */
export async function stopGateway(home: string, timeoutMs = 5000): Promise<boolean> {
  const s = runningGateway(home);
  if (!s) return false;
  process.kill(s.pid, 'SIGTERM');
  const deadline = Date.now() + timeoutMs;
  while (alive(s.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  if (alive(s.pid)) {
    process.kill(s.pid, 'SIGKILL');
    // It could not clean up after itself: its served key copies go too (its nginx dies with it),
    // not those of another gateway of this home that runs.
    new ServedCertificate(gatewayFiles(home).run, s.pid).clear();
  }
  rmSync(gatewayFiles(home).state, { force: true });
  rmSync(gatewayFiles(home).pid, { force: true });
  return true;
}
