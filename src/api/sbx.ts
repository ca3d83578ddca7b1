// The public library API, and what the CLI calls: a facade over a backend (backend.ts). In host
// mode (root, next to a local engine) this process and its daemon do the work (LocalSbx); in
// agent mode (any other user, or a remote engine) the sbx agent on the engine's host does it,
// and this side needs only the Docker API. SBX_AGENT=1 or 0 forces one or the other.
import { subnetPool } from '../core/subnet-pool.ts';
import type { Server } from 'node:net';
import type { SandboxInfo, SandboxRecord } from '../core/sandbox.ts';
import type { GatewayAddress, PortInfo } from '../core/ports.ts';
import type { NetworkPolicy, NetworkPolicyInput } from '../core/network-policy.ts';
import type { GatewayStatus } from '../daemon-client/protocol.ts';
import type { NetworkLogEntry } from '../core/network-log.ts';
import { parseDuration } from '../core/duration.ts';
import type { NetworkCheck } from './network-check.ts';
import { parsePoolSize, type PoolStatus } from '../core/pool.ts';
import type { Runtime } from '../runtime/docker.ts';
import { sbxHome } from '../store/home.ts';
import { UsageError } from '../core/errors.ts';
import type { CaInfo } from './ca.ts';
import { applyDockerContext } from '../runtime/docker-context.ts';
import type { GatewayRoute, SbxBackend } from './backend.ts';
import { checkCommand, execInSandbox, type ExecSandboxOptions } from './exec.ts';
import type { CreateSandboxOptions, RemoveResult } from './local-sbx.ts';
import type { FetchOptions, FetchResponse, ForwardOptions } from './through-gateway.ts';

export { DEFAULT_IMAGE } from './local-sbx.ts';
export type { CreateSandboxOptions, RemoveResult } from './local-sbx.ts';
export type { ExecSandboxOptions } from './exec.ts';

export type SbxMode = 'host' | 'agent';
export type { NetworkLogEntry } from '../core/network-log.ts';
export type { NetworkCheck } from './network-check.ts';

export interface NetworkLogOptions {
  /** Only entries this recent: a duration such as 30s, 5m or 2h, or ms. */
  since?: string | number;
  /** Refusals only. */
  blocked?: boolean;
  follow?: boolean;
  /** Ends a follow. */
  signal?: AbortSignal;
}

export interface SbxOptions {
  /** Where the client's state lives; defaults to $SBX_HOME or the XDG config dir. */
  home?: string;
  /** host: this process does the privileged work; agent: the sbx agent does (default: see chooseMode). */
  mode?: SbxMode;
}

/**
 * Host mode only where it can work: root, and the engine is the local one (its default socket).
 * Everyone else, and every other engine (DOCKER_HOST tcp://, ssh://, another socket), gets the agent.
 */
export function chooseMode(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? 0): SbxMode {
  if (env.SBX_AGENT === '1') return 'agent';
  if (env.SBX_AGENT === '0') return 'host';
  if (uid !== 0) return 'agent';
  const host = env.DOCKER_HOST;
  if (host && host !== 'unix:///var/run/docker.sock' && host !== 'unix:///run/docker.sock') return 'agent';
  return 'host';
}

export class Sbx {
  readonly home: string;
  readonly mode: SbxMode;
  #backend?: Promise<SbxBackend>;

  constructor(options: SbxOptions = {}) {
    this.home = options.home ?? sbxHome();
    // The engine the docker CLI would use: a `docker context` becomes DOCKER_HOST for dockerode.
    applyDockerContext();
    this.mode = options.mode ?? chooseMode();
  }

  /** The backend, loaded on first use (commands that need none start fast). */
  backend(): Promise<SbxBackend> {
    this.#backend ??= (async () => {
      if (this.mode === 'agent') {
        const { tlsSetting, h2cSetting, sourceLimitSetting, gatewaySettings } = await import('../gateway/settings.ts');
        // Bad values are refused here, not in the agent.
        sourceLimitSetting(process.env.SBX_GATEWAY_SOURCE_LIMIT);
        h2cSetting(process.env.SBX_GATEWAY_H2C);
        // The agent serves HTTPS with its own sbx CA; a certificate named by files on this machine
        // is not something it can read (nor renew from): refused, not silently replaced.
        if (tlsSetting(process.env.SBX_GATEWAY_TLS)) {
          if (process.env.SBX_TLS_CERT || process.env.SBX_TLS_KEY) {
            throw new UsageError('SBX_TLS_CERT and SBX_TLS_KEY are not served behind the agent (a user in the docker group, or a remote engine): its gateway serves HTTPS with a certificate from its own sbx CA (sbx ca prints it); unset them, or run sbx as root on the engine\'s host');
          }
          // A domain that cannot have sbx's CA is refused here, before the agent is replaced by one
          // whose gateway could not start.
          const { caDomainProblem } = await import('./ca.ts');
          const problem = caDomainProblem(gatewaySettings().domain);
          if (problem) throw new UsageError(problem);
        }
        const { AgentBackend } = await import('./agent-backend.ts');
        return new AgentBackend(this.home);
      }
      const [{ LocalSbx }, { hostBackend }] = await Promise.all([import('./local-sbx.ts'), import('./host-backend.ts')]);
      return hostBackend(new LocalSbx({ home: this.home }));
    })();
    return this.#backend;
  }

  async runtime(): Promise<Runtime> {
    return (await this.backend()).runtime();
  }

  // ---- sandboxes ------------------------------------------------------------------------

  async create(options: CreateSandboxOptions = {}): Promise<SandboxInfo> {
    subnetPool(); // a bad SBX_SUBNET_POOL is this caller's usage error, before any agent is started
    return (await this.backend()).create(options);
  }
  async list(): Promise<SandboxInfo[]> {
    return (await this.backend()).list();
  }
  async get(ref: string, options: { showToken?: boolean } = {}): Promise<SandboxInfo> {
    return (await this.backend()).get(ref, options);
  }
  /** The stored record of a sandbox (name, id or unique id prefix). */
  async resolve(ref: string): Promise<SandboxRecord> {
    return (await this.backend()).resolve(ref);
  }
  async sandboxNames(): Promise<string[]> {
    return (await this.backend()).sandboxNames();
  }
  async start(ref: string): Promise<SandboxInfo> {
    return (await this.backend()).start(ref);
  }
  async stop(ref: string): Promise<SandboxInfo> {
    return (await this.backend()).stop(ref);
  }
  async pause(ref: string): Promise<SandboxInfo> {
    return (await this.backend()).pause(ref);
  }
  async resume(ref: string): Promise<SandboxInfo> {
    return (await this.backend()).resume(ref);
  }
  /** Removes a sandbox and everything it owns; a running one needs `force` (then a missing one counts as removed). */
  async remove(ref: string, options: { force?: boolean } = {}): Promise<RemoveResult> {
    return (await this.backend()).remove(ref, options);
  }

  /** Runs a command in a running sandbox (through the engine) and resolves with its exit code. */
  async exec(ref: string, options: ExecSandboxOptions): Promise<number> {
    checkCommand(options);
    const backend = await this.backend();
    return execInSandbox(await backend.runtime(), await backend.execTarget(ref), options);
  }

  // ---- ports and the gateway ------------------------------------------------------------

  async exposePorts(ref: string, ports: ReadonlyArray<number | string>, options: { public?: boolean; domain?: string } = {}): Promise<PortInfo[]> {
    return (await this.backend()).exposePorts(ref, ports, options);
  }
  async listPorts(ref: string): Promise<PortInfo[]> {
    return (await this.backend()).listPorts(ref);
  }
  async unexposePorts(ref: string, ports: ReadonlyArray<number | string>): Promise<number[]> {
    return (await this.backend()).unexposePorts(ref, ports);
  }
  /** The sandbox's traffic token; `rotate` replaces it and the old one stops working at once. */
  async token(ref: string, options: { rotate?: boolean } = {}): Promise<string> {
    return (await this.backend()).token(ref, options);
  }
  /** Where URLs point. */
  async gatewayAddress(): Promise<GatewayAddress> {
    return (await this.backend()).gatewayAddress();
  }
  /**
   * sbx's certificate authority for HTTPS URLs (SBX_GATEWAY_TLS=1), made in this home on first
   * use (agent mode: in the agent's, with a copy of its certificate kept in this one): where it
   * is, and how to trust it per client. Nothing is installed anywhere.
   */
  async ca(): Promise<CaInfo & { trust: Record<string, string> }> {
    const [{ trustSteps }, backend] = await Promise.all([import('./ca.ts'), this.backend()]);
    const info = await backend.ca();
    return { ...info, trust: trustSteps(info.path) };
  }

  async gatewayStatus(): Promise<GatewayStatus> {
    return (await this.backend()).gatewayStatus();
  }
  /** Starts the gateway (host mode) or the agent (agent mode) unless it runs. */
  async ensureGateway(): Promise<GatewayRoute> {
    return (await this.backend()).ensureGateway();
  }
  async stopGateway(): Promise<boolean> {
    return (await this.backend()).stopGateway();
  }
  /** One HTTP request to a sandbox port through the gateway, with the sandbox's token (sbx fetch). */
  async fetch(ref: string, port: number | string, options?: FetchOptions): Promise<FetchResponse> {
    const { fetchThroughGateway } = await import('./through-gateway.ts');
    return fetchThroughGateway(this, ref, port, options);
  }
  /** Listens locally and carries each connection to a sandbox port through the gateway (sbx port forward). */
  async forwardPort(ref: string, port: number | string, options?: ForwardOptions): Promise<Server> {
    const { forwardPort } = await import('./through-gateway.ts');
    return forwardPort(this, ref, port, options);
  }

  // ---- network policy -------------------------------------------------------------------

  async getNetwork(ref: string): Promise<NetworkPolicy> {
    return (await this.backend()).getNetwork(ref);
  }
  /** Replaces the whole outbound policy; resolves once the kernel enforces it. */
  async updateNetwork(ref: string, input: NetworkPolicyInput): Promise<NetworkPolicy> {
    return (await this.backend()).updateNetwork(ref, input);
  }
  blockNetwork(ref: string): Promise<NetworkPolicy> {
    return this.updateNetwork(ref, { mode: 'block-all' });
  }
  unblockNetwork(ref: string): Promise<NetworkPolicy> {
    return this.updateNetwork(ref, { mode: 'allow-all' });
  }

  // ---- network log and check ------------------------------------------------------------

  /**
   * The egress decisions sbx made for a sandbox, oldest first: new connections the kernel let
   * through or refused, DNS queries, and the proxy's Host/SNI decisions, each with the rule that
   * decided. `since`: a duration (`5m`) or ms; `blocked`: refusals only. With `follow`, an async
   * iterator: the entries so far, then each new one, until `signal` aborts or the sandbox goes.
   */
  networkLog(ref: string, options: NetworkLogOptions & { follow: true }): AsyncIterableIterator<NetworkLogEntry>;
  networkLog(ref: string, options?: NetworkLogOptions & { follow?: false }): Promise<NetworkLogEntry[]>;
  networkLog(ref: string, options: NetworkLogOptions = {}): Promise<NetworkLogEntry[]> | AsyncIterableIterator<NetworkLogEntry> {
    const since = options.since === undefined ? undefined : Date.now() - (typeof options.since === 'number' ? options.since : parseDuration(options.since));
    const query = { ...(since !== undefined ? { since } : {}), ...(options.blocked ? { blocked: true } : {}) };
    if (!options.follow) return this.backend().then((b) => b.networkLog(ref, query));
    const backend = this.backend();
    return (async function* () {
      // One iterator, backlog included: a consumer that stops early ends it (and its connection).
      yield* await (await backend).followNetworkLog(ref, query, options.signal);
    })();
  }

  /**
   * A dry run: would a connection from the sandbox to `destination` (NAME, ADDRESS, with `:PORT`;
   * 443 without) pass under its policy now, and by which rule? A name goes through sbx's DNS
   * forwarder's decision and sbx's upstream first, as the sandbox's would.
   */
  async checkNetwork(ref: string, destination: string, options: { udp?: boolean } = {}): Promise<NetworkCheck> {
    const { parseCheckDestination } = await import('./network-check.ts');
    parseCheckDestination(destination); // a usage error before any agent is started
    return (await this.backend()).checkNetwork(ref, destination, options);
  }

  // ---- warm pool ------------------------------------------------------------------------

  /**
   * Keeps `size` sandboxes of the common shape (default image, no main command, IPv4) made and
   * running, for create to claim (0: off). Kept in the store; the daemon refills the pool in the
   * background, so this resolves at once with the pool as it stands (a smaller pool's surplus is
   * removed first).
   */
  async setPool(size: number | string): Promise<PoolStatus> {
    const n = parsePoolSize(size); // a usage error before any daemon or agent is started
    return (await this.backend()).setPool(n);
  }
  /** The pool's size, and how many pooled sandboxes are ready, being made and being removed. */
  async poolStatus(): Promise<PoolStatus> {
    return (await this.backend()).poolStatus();
  }

  // ---- images ---------------------------------------------------------------------------

  async imageTags(): Promise<string[]> {
    return (await this.runtime()).listImageTags();
  }
}
