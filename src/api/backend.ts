// What the Sbx facade (sbx.ts) asks of a backend. Two exist: the host backend (sbx runs as root
// next to a local engine and does the privileged work itself, handing changes to its daemon) and
// the agent backend (every call goes to the sbx agent container on the engine's host, through
// the Docker API). Everything here is JSON in and out, so that it can cross to the agent.
import type { Duplex } from 'node:stream';
import type { SandboxInfo, SandboxRecord } from '../core/sandbox.ts';
import type { GatewayAddress, PortInfo } from '../core/ports.ts';
import type { NetworkPolicy, NetworkPolicyInput } from '../core/network-policy.ts';
import type { GatewayStatus } from '../daemon-client/protocol.ts';
import type { Runtime } from '../runtime/docker.ts';
import type { PoolStatus } from '../core/pool.ts';
import type { NetworkLogEntry, NetworkLogQuery } from '../core/network-log.ts';
import type { NetworkCheck } from './network-check.ts';
import type { CreateSandboxOptions, RemoveResult } from './local-sbx.ts';
import type { CaInfo } from './ca.ts';

/** How to reach the gateway's HTTP listener from the client: TCP to host:port, or a tunnel. */
export interface GatewayRoute {
  host: string;
  port: number;
  domain: string;
  /** A byte stream to the listener through the daemon (the engine is elsewhere). */
  connect?: () => Promise<Duplex>;
  /**
   * It serves HTTPS; the CA to trust for it (sbx's own) as a file (`ca`, host mode) or its text
   * (`caPem`, from the agent), else the system's and NODE_EXTRA_CA_CERTS.
   */
  tls?: { ca?: string; caPem?: string };
}

export interface ExecTarget {
  id: string;
  name: string;
  container: string;
  /** Env every exec gets (a sandbox claimed from the warm pool). */
  env?: Record<string, string>;
}

export interface SbxBackend {
  readonly kind: 'host' | 'agent';
  /** The engine, as this client reaches it (exec goes straight through it). */
  runtime(): Promise<Runtime>;
  create(options: CreateSandboxOptions): Promise<SandboxInfo>;
  list(): Promise<SandboxInfo[]>;
  get(ref: string, options?: { showToken?: boolean }): Promise<SandboxInfo>;
  resolve(ref: string): Promise<SandboxRecord>;
  sandboxNames(): Promise<string[]>;
  execTarget(ref: string): Promise<ExecTarget>;
  start(ref: string): Promise<SandboxInfo>;
  stop(ref: string): Promise<SandboxInfo>;
  pause(ref: string): Promise<SandboxInfo>;
  resume(ref: string): Promise<SandboxInfo>;
  remove(ref: string, options?: { force?: boolean }): Promise<RemoveResult>;
  exposePorts(ref: string, ports: ReadonlyArray<number | string>, options?: { public?: boolean; domain?: string }): Promise<PortInfo[]>;
  listPorts(ref: string): Promise<PortInfo[]>;
  unexposePorts(ref: string, ports: ReadonlyArray<number | string>): Promise<number[]>;
  token(ref: string, options?: { rotate?: boolean }): Promise<string>;
  getNetwork(ref: string): Promise<NetworkPolicy>;
  updateNetwork(ref: string, input: NetworkPolicyInput): Promise<NetworkPolicy>;
  gatewayAddress(): Promise<GatewayAddress>;
  gatewayStatus(): Promise<GatewayStatus>;
  ensureGateway(): Promise<GatewayRoute>;
  stopGateway(): Promise<boolean>;
  networkLog(ref: string, query?: NetworkLogQuery): Promise<NetworkLogEntry[]>;
  /** The log as it stands, then each new entry, until `signal` aborts or the sandbox is removed. */
  followNetworkLog(ref: string, query?: NetworkLogQuery, signal?: AbortSignal): Promise<AsyncIterable<NetworkLogEntry>>;
  checkNetwork(ref: string, destination: string, options?: { udp?: boolean }): Promise<NetworkCheck>;
  setPool(size: number | string): Promise<PoolStatus>;
  poolStatus(): Promise<PoolStatus>;
  /** The sbx CA that the gateway's HTTPS certificates chain to, as a file on this machine. */
  ca(): Promise<CaInfo>;
}
