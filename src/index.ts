// The sbx library: the same API the CLI uses.
//
//   import { Sbx } from 'sbx';
//   const sbx = new Sbx();
//   const box = await sbx.create({ name: 'demo' });
//   await sbx.exec('demo', { command: ['python3', '-V'] });
//   await sbx.remove('demo', { force: true });
import { Sbx, type CreateSandboxOptions, type ExecSandboxOptions } from './api/sbx.ts';
import type { SandboxInfo } from './core/sandbox.ts';
import type { NetworkPolicy, NetworkPolicyInput } from './core/network-policy.ts';

export { Sbx, DEFAULT_IMAGE } from './api/sbx.ts';
export type { CreateSandboxOptions, ExecSandboxOptions, RemoveResult, SbxOptions } from './api/sbx.ts';
export type { FetchOptions, FetchResponse, ForwardOptions } from './api/through-gateway.ts';
export type { GatewayStatus } from './gateway/state.ts';
export type { SandboxInfo, SandboxStatus, SandboxRecord } from './core/sandbox.ts';
export { SbxError, UsageError, NotFoundError, RuntimeError, RemovalError, InterruptedError, exitCodeOf } from './core/errors.ts';
export { Runtime } from './runtime/docker.ts';
export { buildBaseImage } from './api/image.ts';
export type { NetworkPolicy, NetworkPolicyInput, NetworkMode } from './core/network-policy.ts';
export { normalizePolicy, DEFAULT_POLICY } from './core/network-policy.ts';

let shared: Sbx | undefined;
const client = () => (shared ??= new Sbx());

// Function-style shortcuts on a default client (SBX_HOME or the XDG config dir).
export const createSandbox = (options?: CreateSandboxOptions): Promise<SandboxInfo> => client().create(options);
export const listSandboxes = (): Promise<SandboxInfo[]> => client().list();
export const getSandbox = (ref: string): Promise<SandboxInfo> => client().get(ref);
export const exec = (ref: string, options: ExecSandboxOptions): Promise<number> => client().exec(ref, options);
export const start = (ref: string): Promise<SandboxInfo> => client().start(ref);
export const stop = (ref: string): Promise<SandboxInfo> => client().stop(ref);
export const pause = (ref: string): Promise<SandboxInfo> => client().pause(ref);
export const resume = (ref: string): Promise<SandboxInfo> => client().resume(ref);
export const remove = (ref: string, options?: { force?: boolean }) => client().remove(ref, options);
export const getNetwork = (ref: string): Promise<NetworkPolicy> => client().getNetwork(ref);
export const updateNetwork = (ref: string, policy: NetworkPolicyInput): Promise<NetworkPolicy> => client().updateNetwork(ref, policy);
