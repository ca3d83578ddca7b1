// The sbx agent container on an engine (see src/api/agent-backend.ts for when it is used): how
// it is run, found, replaced, and reached through the Docker API alone (`docker exec` of
// `agent pipe`, a byte pipe to its control socket). Only dockerode calls here.
import { Duplex, PassThrough } from 'node:stream';
import type { Runtime } from './docker.ts';
import { statusOf, toRuntimeError } from './errors.ts';

export const LABEL_AGENT = 'sbx.agent';
export const LABEL_AGENT_BUILD = 'sbx.build';
export const LABEL_AGENT_VERSION = 'sbx.version';
export const LABEL_AGENT_CLIENT = 'sbx.agent.client';

export interface AgentSpec {
  name: string;
  image: string;
  /** The named volume that holds the agent's SBX_HOME (desired state on the engine's side). */
  volume: string;
  /** Where the engine's socket may be on its own host, tried in order (the first that exists there is mounted). */
  engineSockets: string[];
  /** A host directory for the control socket (the local shortcut), when the engine is local. */
  socketDir?: string;
  env: Record<string, string>;
  labels: Record<string, string>;
}

export interface AgentSummary {
  id: string;
  running: boolean;
  build?: string;
  version?: string;
  /** The settings fingerprint it was started with. */
  config?: string;
  image: string;
}

/** Where a named volume lives on the engine's host (it is mounted at that same path in the agent). */
export async function ensureVolume(runtime: Runtime, name: string, labels: Record<string, string>): Promise<string> {
  try {
    const v = (await runtime.docker.createVolume({ Name: name, Labels: labels })) as unknown as { Mountpoint?: string; inspect?: () => Promise<{ Mountpoint: string }> };
    const info = v.Mountpoint ? v : await runtime.docker.getVolume(name).inspect();
    return (info as { Mountpoint: string }).Mountpoint;
  } catch (err) {
    throw toRuntimeError(err, `could not create the agent's volume ${name}`);
  }
}

export async function inspectAgent(runtime: Runtime, name: string): Promise<AgentSummary | undefined> {
  try {
    const info = await runtime.docker.getContainer(name).inspect();
    const labels = info.Config?.Labels ?? {};
    return { id: info.Id, running: !!info.State?.Running && !info.State?.Restarting, build: labels[LABEL_AGENT_BUILD], version: labels[LABEL_AGENT_VERSION], config: labels['sbx.agent.config'], image: info.Config?.Image ?? '' };
  } catch (err) {
    if (statusOf(err) === 404) return undefined;
    throw toRuntimeError(err, `could not inspect the sbx agent ${name}`);
  }
}

/**
 * Creates and starts the agent: the host's network and process namespaces (rules, bridges,
 * relays into sandboxes), NET_ADMIN (nftables, conntrack) and SYS_ADMIN (entering sandboxes'
 * network namespaces); restarted with the engine. Its home is mounted at the volume's own host
 * path, so that files it hands to sandboxes (resolv.conf) are found by the engine. Rejects with
 * `conflict: true` when another client is creating it at the same moment.
 */
export async function runAgent(runtime: Runtime, spec: AgentSpec, homePath: string): Promise<void> {
  const sockets = [...new Set(spec.engineSockets)];
  for (let i = 0; ; i++) {
    try {
      return await createAgent(runtime, spec, homePath, sockets[i]!);
    } catch (err) {
      // A socket path of this client that is not one on the engine's host: the next candidate.
      if (i + 1 < sockets.length && (err as { missingSocket?: boolean }).missingSocket) continue;
      throw err;
    }
  }
}

async function createAgent(runtime: Runtime, spec: AgentSpec, homePath: string, engineSocket: string): Promise<void> {
  try {
    const c = await runtime.docker.createContainer({
      name: spec.name,
      Image: spec.image,
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      Labels: { ...spec.labels, [LABEL_AGENT]: 'true' },
      HostConfig: {
        NetworkMode: 'host',
        PidMode: 'host',
        CapAdd: ['NET_ADMIN', 'SYS_ADMIN'],
        // Nothing in it gains privileges by exec (setuid binaries of the base system included).
        SecurityOpt: ['no-new-privileges'],
        RestartPolicy: { Name: 'unless-stopped' },
        Binds: [`${spec.volume}:${homePath}`, ...(spec.socketDir ? [`${spec.socketDir}:/run/sbx-agent`] : [])],
        // A mount (not a bind) of the socket: the engine refuses a path its host lacks rather
        // than making an empty directory there.
        Mounts: [{ Type: 'bind', Source: engineSocket, Target: '/var/run/docker.sock' }],
      },
    });
    await c.start();
  } catch (err) {
    if (statusOf(err) === 400 && /bind source path does not exist/i.test(String((err as { json?: { message?: string } }).json?.message ?? (err as Error).message))) {
      throw Object.assign(toRuntimeError(err, `the engine's host has no socket at ${engineSocket}`), { missingSocket: true });
    }
    if (statusOf(err) === 409) throw Object.assign(toRuntimeError(err, 'the sbx agent is being created by another sbx process'), { conflict: true });
    throw toRuntimeError(err, `could not start the sbx agent ${spec.name}`);
  }
}

/** Stops and removes the agent (its volume, and so the desired state, stays). */
export async function removeAgent(runtime: Runtime, name: string, timeoutS = 10): Promise<void> {
  const c = runtime.docker.getContainer(name);
  // A graceful stop first (its daemon removes its guard), unless it cannot be had: a container
  // that is restarting refuses a stop, and is removed by force all the same.
  if (timeoutS > 0) await c.stop({ t: timeoutS }).catch(() => {});
  // One that keeps restarting is refused removal while it does ("cannot remove a restarting
  // container"): it is told not to restart first, then removed, a few tries apart.
  await c.update({ RestartPolicy: { Name: 'no' } }).catch(() => {});
  for (let attempt = 0; ; attempt++) {
    try {
      await c.remove({ force: true });
      // The engine may answer before the container is gone (a removal in progress): wait for it.
      for (let i = 0; i < 100; i++) {
        const gone = await c.inspect().then(() => false, (e: unknown) => statusOf(e) === 404);
        if (gone) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      return;
    } catch (err) {
      if (statusOf(err) === 404) return;
      if (statusOf(err) !== 409 || attempt >= 20) throw toRuntimeError(err, `could not remove the sbx agent ${name}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

/** Stops the agent and keeps it (it is not restarted until started again). */
export async function stopAgent(runtime: Runtime, name: string): Promise<boolean> {
  try {
    await runtime.docker.getContainer(name).stop({ t: 10 });
    return true;
  } catch (err) {
    if (statusOf(err) === 304 || statusOf(err) === 404) return false;
    throw toRuntimeError(err, `could not stop the sbx agent ${name}`);
  }
}

/** The last lines the agent wrote (why it did not start). */
export async function agentLogTail(runtime: Runtime, name: string, lines = 5): Promise<string> {
  try {
    const buf = (await runtime.docker.getContainer(name).logs({ stdout: true, stderr: true, tail: lines })) as unknown as Buffer;
    // Without a TTY the log is framed: 8-byte headers before each chunk.
    const out: string[] = [];
    for (let i = 0; i + 8 <= buf.length; ) {
      const size = buf.readUInt32BE(i + 4);
      out.push(buf.subarray(i + 8, i + 8 + size).toString('utf8'));
      i += 8 + size;
    }
    // An agent that keeps failing at start says the same thing each time: once is enough.
    return [...new Set(out.join('').trim().split('\n').slice(-lines))].join(' | ');
  } catch {
    return '';
  }
}

/** A byte stream to `cmd` run in the container (stdin and stdout, unframed): the remote transport. */
export async function execPipe(runtime: Runtime, container: string, cmd: string[]): Promise<Duplex> {
  let stream: NodeJS.ReadWriteStream & { end(): void; destroy(): void };
  try {
    const exec = await runtime.docker.getContainer(container).exec({ Cmd: cmd, AttachStdin: true, AttachStdout: true, AttachStderr: true, Tty: false });
    stream = (await exec.start({ hijack: true, stdin: true, Tty: false })) as typeof stream;
  } catch (err) {
    const e = toRuntimeError(err, `could not reach the sbx agent ${container}`);
    throw Object.assign(e, { unreachable: statusOf(err) === 404 || statusOf(err) === 409 });
  }
  const out = new PassThrough();
  const errors = new PassThrough();
  errors.resume();
  runtime.docker.modem.demuxStream(stream, out, errors);
  // The command ended (the agent's socket refused, or the daemon answered and closed): so does the pipe.
  const ended = () => out.end();
  out.once('end', () => duplex.destroy());
  stream.on('end', ended);
  stream.on('close', ended);
  const duplex = Duplex.from({ readable: out, writable: stream as unknown as NodeJS.WritableStream }) as Duplex;
  const destroy = duplex.destroy.bind(duplex);
  duplex.destroy = (err?: Error) => {
    stream.destroy();
    return destroy(err);
  };
  return duplex;
}
