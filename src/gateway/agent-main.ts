// The agent: the gateway daemon (main.ts) run in a container on the engine's host, for one
// client's SBX_HOME kept in the agent's volume. Its control socket is the only way in: in a
// directory shared with the host (the local shortcut; group of the engine's socket, so whoever
// may use the engine may use sbx), or reached by `docker exec ... agent pipe` from anywhere.
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import { gatewayFiles, DEFAULT_GATEWAY_PORT } from './settings.ts';
import type { RunningGateway } from './main.ts';

/** Ports tried, in order, when SBX_GATEWAY_PORT is not set: two users' agents never collide. */
const PORT_RANGE = 100;

function free(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** The agent's gateway port: the one it had (URLs stay the same across restarts), else the first free from 7070. */
async function pickPort(home: string, host: string): Promise<number> {
  const file = join(home, 'agent-port');
  let kept: number | undefined;
  try {
    kept = Number(readFileSync(file, 'utf8').trim()) || undefined;
  } catch {}
  if (kept) {
    // URLs (and browsers' cookies, which follow a host name to every port) name this port: it
    // never moves silently to another while someone else holds it.
    if (await free(host, kept)) return kept;
    const { portInUse } = await import('./port-owner.ts');
    throw new RuntimeError(`${portInUse(host, kept)} (this agent's URLs use it; free it, or set SBX_GATEWAY_PORT to move them)`);
  }
  for (let port = DEFAULT_GATEWAY_PORT; port < DEFAULT_GATEWAY_PORT + PORT_RANGE; port++) {
    if (await free(host, port)) {
      writeFileSync(file, `${port}\n`);
      return port;
    }
  }
  throw new RuntimeError(`no free gateway port in ${DEFAULT_GATEWAY_PORT}-${DEFAULT_GATEWAY_PORT + PORT_RANGE - 1} on ${host}: set SBX_GATEWAY_PORT`);
}

export function controlSocketPath(home = process.env.SBX_HOME ?? ''): string {
  return process.env.SBX_CONTROL_SOCKET || join(gatewayFiles(home).run, 'control.sock');
}

export async function runAgentDaemon(): Promise<RunningGateway> {
  const home = process.env.SBX_HOME;
  if (!home) throw new RuntimeError('the agent needs SBX_HOME (its volume)');
  mkdirSync(home, { recursive: true, mode: 0o700 });
  if (!process.env.SBX_GATEWAY_PORT) process.env.SBX_GATEWAY_PORT = String(await pickPort(home, process.env.SBX_GATEWAY_HOST || '127.0.0.1'));
  const [{ runGateway }, { LocalSbx }, { agentBuildId }] = await Promise.all([import('./main.ts'), import('../api/local-sbx.ts'), import('../api/agent-build.ts')]);
  const sbx = new LocalSbx({ home, delegate: false });
  // The socket mounted in must be the engine the client spoke to, or the agent would guard another one.
  const wanted = process.env.SBX_AGENT_ENGINE_ID;
  const here = await (await sbx.runtime()).engineId();
  if (!wanted || !here || here !== wanted) throw new RuntimeError(`the engine socket mounted into the agent belongs to engine ${here}, not ${wanted} (the one sbx was started against): set SBX_AGENT_ENGINE_SOCKET to the engine's socket path on its host`);
  // The shared socket: the engine socket's group may use it (0660), nobody else.
  const access = process.env.SBX_CONTROL_SOCKET && existsSync('/var/run/docker.sock') ? { gid: statSync('/var/run/docker.sock').gid, mode: 0o660 } : undefined;
  return runGateway(sbx, { build: agentBuildId(), config: process.env.SBX_AGENT_CONFIG }, access);
}

/** `agent pipe`: stdin to the control socket, its answers to stdout (the remote transport). */
export function pipeToControl(): Promise<number> {
  return new Promise((resolve) => {
    const conn = createConnection(controlSocketPath());
    conn.once('error', (err) => {
      process.stderr.write(`error: the agent's control socket does not answer: ${err.message}\n`);
      resolve(1);
    });
    conn.once('connect', () => {
      process.stdin.pipe(conn);
      conn.pipe(process.stdout);
    });
    conn.once('close', () => resolve(0));
  });
}
