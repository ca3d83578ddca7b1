// Agent mode: every call goes to the sbx agent, a container on the engine's host that does the
// privileged work there (src/gateway/agent-main.ts). This side needs only the Docker API: it
// starts the agent when it is missing or older, then talks to its control socket, directly when
// the engine is local (a socket in a shared directory) and through `docker exec` otherwise.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import { VERSION } from '../core/version.ts';
import type { SandboxInfo, SandboxRecord } from '../core/sandbox.ts';
import type { PoolStatus } from '../core/pool.ts';
import type { NetworkLogEntry, NetworkLogQuery } from '../core/network-log.ts';
import type { NetworkCheck } from './network-check.ts';
import type { GatewayAddress, PortInfo } from '../core/ports.ts';
import type { NetworkPolicy } from '../core/network-policy.ts';
import type { GatewayStatus } from '../daemon-client/protocol.ts';
import type { Runtime } from '../runtime/docker.ts';
import { DaemonClient, MismatchError, unixTransport, type CallOptions, type Transport } from '../daemon-client/client.ts';
import { GATEWAY_THREADPOOL, PROTOCOL_VERSION, type RemoteMethod } from '../daemon-client/protocol.ts';
import type { ExecTarget, GatewayRoute, SbxBackend } from './backend.ts';
import type { CreateSandboxOptions, RemoveResult } from './local-sbx.ts';
import type { CaInfo } from './ca.ts';
import { gatewaySettings, tlsSetting } from '../gateway/settings.ts';

/** Settings the agent's daemon reads at start: an agent started with others is replaced. */
const PASSED_ENV = ['SBX_GATEWAY_HOST', 'SBX_GATEWAY_PORT', 'SBX_DOMAIN', 'SBX_DNS_UPSTREAM', 'SBX_GATEWAY_ENGINE', 'SBX_START_TIMEOUT_MS', 'SBX_UPSTREAM_TIMEOUT_MS', 'SBX_SUBNET_POOL', 'SBX_GATEWAY_SOURCE_LIMIT', 'SBX_GATEWAY_H2C', 'SBX_GATEWAY_TLS'];

/** How long a client waits for an agent to answer after starting it. */
const START_TIMEOUT_MS = Number(process.env.SBX_AGENT_START_TIMEOUT_MS) || 60_000;

/**
 * What `docker exec` runs in the agent to reach its control socket: `sbx agent pipe` in a few
 * lines, without loading sbx's bundle (a Node start is most of a remote call's cost). The agent's
 * container runs a moment before its daemon listens (after the engine restarts, or a start), and
 * a client that trusts its labels sends its request at once: the script waits for the socket (as
 * long as a client waits for a starting agent; the container's end ends it too), and the request,
 * unread until then, goes nowhere else.
 */
export const PIPE_SCRIPT = `const path = process.env.SBX_CONTROL_SOCKET || process.env.SBX_HOME + '/run/control.sock';
const deadline = Date.now() + ${START_TIMEOUT_MS};
const connect = () => { const c = require('net').connect(path); let up = false;
c.on('error', (e) => { if (up || !['ENOENT', 'ECONNREFUSED'].includes(e.code) || Date.now() > deadline) { process.stderr.write('error: the control socket of the agent does not answer: ' + e.message + '\\n'); process.exit(1); } setTimeout(connect, 100); });
c.on('connect', () => { up = true; process.stdin.pipe(c); c.pipe(process.stdout); }); };
connect();`;

/** One agent per client home on an engine: its container and volume names. */
export function agentNames(home: string, uid = process.getuid?.() ?? 0, engine = process.env.DOCKER_HOST ?? ''): { container: string; volume: string; socketDir: string; key: string } {
  // The engine is part of the key: two engines that share this machine's files never share a
  // control socket directory (a client would use whichever agent answered there).
  const key = createHash('sha256').update(`${hostname()}\0${uid}\0${home}\0${engine}`).digest('hex').slice(0, 12);
  return { key, container: `sbx-agent-${key}`, volume: `sbx-agent-${key}`, socketDir: `/run/sbx-agent/${key}` };
}

/** The engine's socket as a path on this machine, when the engine is local (the shortcut). */
export function localEngineSocket(env = process.env): string | undefined {
  const host = env.DOCKER_HOST;
  const path = !host ? '/var/run/docker.sock' : host.startsWith('unix://') ? host.slice('unix://'.length) : undefined;
  return path && existsSync(path) ? path : undefined;
}

/** a < b for dotted versions (1.2.10 > 1.2.9); pre-release tails are ignored. */
export function olderVersion(a: string, b: string): boolean {
  const pa = a.split(/[.-]/).slice(0, 3).map(Number);
  const pb = b.split(/[.-]/).slice(0, 3).map(Number);
  for (let i = 0; i < 3; i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) < (pb[i] ?? 0);
  return false;
}

export class AgentBackend implements SbxBackend {
  readonly kind = 'agent';
  readonly home: string;
  #runtime?: Runtime;
  #client?: Promise<DaemonClient>;

  constructor(home: string, runtime?: Runtime) {
    this.home = home;
    this.#runtime = runtime;
  }

  async runtime(): Promise<Runtime> {
    if (!this.#runtime) {
      const { Runtime } = await import('../runtime/docker.ts');
      this.#runtime = new Runtime();
    }
    return this.#runtime;
  }

  /** The agent's settings fingerprint: the passed environment. */
  #config(): { env: Record<string, string>; hash: string } {
    const env: Record<string, string> = {};
    for (const k of PASSED_ENV) if (process.env[k] !== undefined) env[k] = process.env[k]!;
    // On or off, however it is spelt (1, true, yes...): another spelling does not replace the agent.
    if (tlsSetting(env.SBX_GATEWAY_TLS)) env.SBX_GATEWAY_TLS = '1';
    else delete env.SBX_GATEWAY_TLS;
    return { env, hash: createHash('sha256').update(JSON.stringify(env)).digest('hex').slice(0, 12) };
  }

  /** Whether calls go through `docker exec` (no local shortcut). */
  #viaExec(): boolean {
    return !localEngineSocket() || process.env.SBX_AGENT_VIA === 'exec';
  }

  #transport(names: ReturnType<typeof agentNames>, runtime: Runtime): Transport {
    // SBX_AGENT_VIA=exec: always through the engine's API (how a remote engine is reached; tests).
    const local = this.#viaExec() ? undefined : join(names.socketDir, 'control.sock');
    const viaExec: Transport = async () => {
      const { execPipe } = await import('../runtime/agent.ts');
      return execPipe(runtime, names.container, ['/usr/local/bin/node', '-e', PIPE_SCRIPT]);
    };
    if (!local) return viaExec;
    const viaSocket = unixTransport(local);
    // The shortcut when this machine sees the agent's socket; the engine's API otherwise.
    return async () => (existsSync(local) ? viaSocket().catch((err) => ((err as { code?: string }).code === 'EACCES' ? Promise.reject(err) : viaExec())) : viaExec());
  }

  /** Starts (or replaces) the agent when needed and resolves with a client that it answers. */
  client(): Promise<DaemonClient> {
    this.#client ??= this.#connect().catch((err) => {
      this.#client = undefined;
      throw err;
    });
    return this.#client;
  }

  async #connect(): Promise<DaemonClient> {
    const runtime = await this.runtime();
    const agent = await import('../runtime/agent.ts');
    const { agentBuildId } = await import('./agent-build.ts');
    const names = agentNames(this.home);
    const build = agentBuildId();
    const config = this.#config();
    const client = new DaemonClient(this.#transport(names, runtime));
    // The common case: the agent answers, and it is this build with these settings. Through the
    // engine's API, its labels say so for less than a round trip through it.
    if (this.#viaExec()) {
      const current = await agent.inspectAgent(runtime, names.container);
      if (current?.running && current.build === build && current.config === config.hash) return client;
    } else {
      const hello = await client.hello(5000).catch(() => undefined);
      if (hello?.protocol === PROTOCOL_VERSION && hello.build === build && hello.config === config.hash) return client;
    }
    for (let attempt = 0; attempt < 2; attempt++) {
      const current = await agent.inspectAgent(runtime, names.container);
      const fresh = current?.running && current.build === build && current.config === config.hash;
      if (!fresh) {
        const images = await import('./agent-image.ts');
        if (current?.version && current.running && olderVersion(VERSION, current.version)) {
          throw new RuntimeError(`the sbx agent on this engine (${names.container}) is version ${current.version}, newer than this sbx ${VERSION}: upgrade sbx`);
        }
        const image = await images.ensureAgentImage(runtime);
        // The swap: the old agent goes first (it holds the gateway port); the kernel's rules stay
        // in force meanwhile, and DNS and the proxy are refused, not opened, until the new one runs.
        if (current) await agent.removeAgent(runtime, names.container);
        const home = await agent.ensureVolume(runtime, names.volume, { 'sbx.agent': 'true', 'sbx.agent.home': this.home });
        const socketDir = localEngineSocket() ? names.socketDir : undefined;
        await agent
          .runAgent(
            runtime,
            {
              name: names.container,
              image,
              volume: names.volume,
              // Where the engine's socket is on its own host: said, or this client's path (a local
              // engine), or the usual places. The agent checks that it reached this very engine.
              engineSockets: process.env.SBX_AGENT_ENGINE_SOCKET ? [process.env.SBX_AGENT_ENGINE_SOCKET] : [...(localEngineSocket() ? [localEngineSocket()!] : []), '/var/run/docker.sock', '/run/docker.sock'],
              socketDir,
              env: { ...config.env, UV_THREADPOOL_SIZE: GATEWAY_THREADPOOL, SBX_HOME: home, SBX_AGENT_CONFIG: config.hash, SBX_AGENT_ENGINE_ID: await runtime.engineId(), ...(socketDir ? { SBX_CONTROL_SOCKET: '/run/sbx-agent/control.sock' } : {}) },
              labels: { 'sbx.agent.config': config.hash, 'sbx.agent.home': this.home, 'sbx.agent.client': `${hostname()}:${process.getuid?.() ?? 0}` },
            },
            home,
          )
          .catch((err: { conflict?: boolean }) => {
            if (!err.conflict) throw err; // another sbx process is starting it: wait for it below
          });
      }
      try {
        await this.#waitForHello(client, runtime, names.container);
        return client;
      } catch (err) {
        // An agent of another protocol (an older sbx started it): replace it once.
        if (!(err instanceof MismatchError) || attempt > 0) throw err;
        await agent.removeAgent(runtime, names.container);
      }
    }
    throw new RuntimeError('the sbx agent could not be started');
  }

  async #waitForHello(client: DaemonClient, runtime: Runtime, container: string): Promise<void> {
    const { inspectAgent, agentLogTail } = await import('../runtime/agent.ts');
    const deadline = Date.now() + START_TIMEOUT_MS;
    let last: unknown;
    for (;;) {
      try {
        // Each try ends by the deadline: a hung exec into a restarting agent must not outlast it.
        const hello = await client.hello(Math.max(250, Math.min(5000, deadline - Date.now())));
        if (hello.protocol !== PROTOCOL_VERSION) throw new MismatchError(hello.protocol);
        return;
      } catch (err) {
        if (err instanceof MismatchError) throw err;
        last = err;
      }
      const a = await inspectAgent(runtime, container);
      if (!a) throw new RuntimeError(`the sbx agent ${container} is gone (removed by another sbx process?): retry`);
      if (Date.now() > deadline) {
        const tail = await agentLogTail(runtime, container);
        // An agent that cannot serve is not left restarting: its volume keeps the desired state,
        // the kernel keeps the rules, and the next command starts a new one.
        const { removeAgent } = await import('../runtime/agent.ts');
        await removeAgent(runtime, container, 0).catch(() => {});
        throw new RuntimeError(`the sbx agent ${container} did not answer within ${START_TIMEOUT_MS / 1000}s${tail ? `: ${tail}` : ''} (${(last as Error)?.message ?? 'no answer'}); it was removed, nothing else changed`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async call<T>(method: RemoteMethod, args: unknown[], options?: CallOptions): Promise<T> {
    return (await this.client()).call<T>(method, args, options);
  }

  create(options: CreateSandboxOptions): Promise<SandboxInfo> {
    const { signal, onProgress: _progress, ...plain } = options;
    return this.call('create', [plain], { signal });
  }
  list = (): Promise<SandboxInfo[]> => this.call('list', []);
  get = (ref: string, options?: { showToken?: boolean }): Promise<SandboxInfo> => this.call('get', [ref, options ?? {}]);
  resolve = (ref: string): Promise<SandboxRecord> => this.call('resolve', [ref]);
  sandboxNames = (): Promise<string[]> => this.call('sandboxNames', []);
  execTarget = (ref: string): Promise<ExecTarget> => this.call('execTarget', [ref]);
  start = (ref: string): Promise<SandboxInfo> => this.call('start', [ref]);
  stop = (ref: string): Promise<SandboxInfo> => this.call('stop', [ref]);
  pause = (ref: string): Promise<SandboxInfo> => this.call('pause', [ref]);
  resume = (ref: string): Promise<SandboxInfo> => this.call('resume', [ref]);
  remove = (ref: string, options?: { force?: boolean }): Promise<RemoveResult> => this.call('remove', [ref, options ?? {}]);
  exposePorts = (ref: string, ports: ReadonlyArray<number | string>, options?: { public?: boolean; domain?: string }): Promise<PortInfo[]> => this.call('exposePorts', [ref, ports, options ?? {}]);
  listPorts = (ref: string): Promise<PortInfo[]> => this.call('listPorts', [ref]);
  unexposePorts = (ref: string, ports: ReadonlyArray<number | string>): Promise<number[]> => this.call('unexposePorts', [ref, ports]);
  token = (ref: string, options?: { rotate?: boolean }): Promise<string> => this.call('token', [ref, options ?? {}]);
  getNetwork = (ref: string): Promise<NetworkPolicy> => this.call('getNetwork', [ref]);
  updateNetwork = (ref: string, input: unknown): Promise<NetworkPolicy> => this.call('updateNetwork', [ref, input]);
  gatewayAddress = (): Promise<GatewayAddress> => this.call('gatewayAddress', []);
  setPool = (size: number | string): Promise<PoolStatus> => this.call('setPool', [size]);
  checkNetwork = (ref: string, destination: string, options?: { udp?: boolean }): Promise<NetworkCheck> => this.call('checkNetwork', [ref, destination, options ?? {}]);
  networkLog = async (ref: string, query: NetworkLogQuery = {}): Promise<NetworkLogEntry[]> => (await import('../daemon-client/network-log.ts')).readNetworkLog(await this.client(), ref, query);
  followNetworkLog = async (ref: string, query: NetworkLogQuery = {}, signal?: AbortSignal): Promise<AsyncIterable<NetworkLogEntry>> =>
    (await import('../daemon-client/network-log.ts')).followNetworkLog(await this.client(), ref, query, signal);
  poolStatus = (): Promise<PoolStatus> => this.call('poolStatus', []);

  /** The agent's sbx CA (made there on first use): its certificate, kept as a file of this home. */
  async ca(): Promise<CaInfo> {
    const remote = await this.call<CaInfo & { pem: string }>('ca', []);
    const { keepCaCopy } = await import('./ca.ts');
    return keepCaCopy(this.home, agentNames(this.home).container, String(remote.pem), remote.created === true, gatewaySettings().domain);
  }

  /** Asks the agent when it runs; a stopped (or absent) agent is not started to say it is stopped. */
  async gatewayStatus(): Promise<GatewayStatus> {
    const agent = agentNames(this.home).container;
    const { inspectAgent } = await import('../runtime/agent.ts');
    if (!(await inspectAgent(await this.runtime(), agent))?.running) return { running: false, log: `docker logs ${agent}`, agent };
    const status = await this.call<GatewayStatus>('gatewayStatus', []);
    return { ...status, agent };
  }

  /** The agent is the gateway: the route to its listener goes through the agent itself. */
  async ensureGateway(): Promise<GatewayRoute> {
    const client = await this.client();
    const hello = await client.hello();
    const gw = hello.gateway ?? { host: '127.0.0.1', port: 0, domain: 'sbx.localhost' };
    // HTTPS: checked against the agent's CA as it says (the tunnel is the Docker API's, which
    // this client already trusts), never unchecked.
    return { host: gw.host, port: gw.port, domain: gw.domain, connect: () => client.tunnel(), ...(gw.tls ? { tls: gw.tls.caPem ? { caPem: gw.tls.caPem } : {} } : {}) };
  }

  /** Stops the agent container (it stays stopped until the next command that needs it). */
  async stopGateway(): Promise<boolean> {
    const { stopAgent } = await import('../runtime/agent.ts');
    this.#client = undefined;
    return stopAgent(await this.runtime(), agentNames(this.home).container);
  }
}
