// The domain model of a sandbox: what the store keeps (desired state) and what users see.
import type { ExposedPort, PortInfo } from './ports.ts';
import type { NetworkPolicy } from './network-policy.ts';

export type SandboxStatus = 'running' | 'paused' | 'stopped' | 'missing' | 'creating' | 'removing';

/**
 * A process working on a record (a create, a removal): its pid and, where the system tells, its
 * start time, so that a later process that got the same pid is not taken for it.
 */
export interface ProcessRef {
  pid: number;
  start?: string;
}

/** A removal (sbx rm, or the rollback of a failed create) that has begun and not finished. */
export interface RemovalState {
  /** When it began (ISO time). */
  since: string;
  /** The process removing it now; absent once it gave up: then the reconciler retries. */
  by?: ProcessRef;
  /** What the last try could not remove ("network sbx-…"), and why. */
  left?: string[];
  error?: string;
}

/** What the user asked for; the store keeps this, the reconciler makes it real. */
export interface SandboxRecord {
  id: string;
  name: string;
  image: string;
  createdAt: string;
  /** Main command; empty means the default long-lived idle command. */
  command: string[];
  env: Record<string, string>;
  /** Memory limit in bytes, 0 for none. */
  memory: number;
  /** CPU limit in units of CPUs, 0 for none. */
  cpus: number;
  /** Most processes at once (pids cgroup); absent in records made before it existed: the default. */
  pidsLimit?: number;
  /** The state the user last asked for. */
  desired: 'running' | 'paused' | 'stopped';
  /** Set while `create` is still making the container; such records are not yet sandboxes. */
  creating?: boolean;
  /** The process doing the create (while `creating`): once it is gone, the record is stale and rolled back. */
  creator?: ProcessRef;
  /** Set once a removal began; kept, with what is left, when it could not finish (see reconcile.ts). */
  removing?: RemovalState;
  /** Ports routed by the gateway. */
  ports?: ExposedPort[];
  /** The traffic token that private ports require. */
  token?: string;
  /** Host header template sent into the sandbox, e.g. "localhost:${PORT}". */
  maskHost?: string;
  /** When the gateway removes the sandbox (ISO time), from --ttl. */
  expiresAt?: string;
  /** The outbound policy; absent means allow-all with no lists. */
  network?: NetworkPolicy;
  /** The network has IPv6 too (create --ipv6). */
  ipv6?: boolean;
  /**
   * Claimed from the warm pool (src/api/pool.ts): its container ran before it was this sandbox, so
   * `env` is applied to every exec, and its hostname and Docker label sbx.name are its id.
   */
  pooled?: boolean;
}

/** A sandbox as printed by `inspect --json` and returned by the library. */
export interface SandboxInfo {
  id: string;
  name: string;
  image: string;
  status: SandboxStatus;
  createdAt: string;
  command: string[];
  env: Record<string, string>;
  memory: number;
  cpus: number;
  /** Most processes (and threads) the sandbox may have at once. */
  pidsLimit: number;
  /** The sandbox's address on its own bridge network, when running. */
  ip?: string;
  /** Its IPv6 address, for sandboxes created with IPv6. */
  ip6?: string;
  /** The Linux bridge interface that carries this sandbox's traffic. */
  bridge: string;
  container: string;
  /** The Docker network (renamed from `network`, which is now the egress policy). */
  dockerNetwork: string;
  ports: PortInfo[];
  maskHost?: string;
  expiresAt?: string;
  /** The outbound policy in force. */
  network: NetworkPolicy;
  /** Only where asked for (sbx token, create with private ports, inspect --show-token). */
  token?: string;
  /** status `removing`: what a removal that did not finish left (sbx rm retries), and why. */
  removing?: { left: string[]; error?: string };
  /** Claimed from the warm pool (see SandboxRecord.pooled). */
  pooled?: boolean;
}

/** Docker object names derive from the id so that two SBX_HOMEs never collide. */
export function objectNames(id: string): { container: string; network: string; bridge: string } {
  // Bridge interface names are limited to 15 bytes (IFNAMSIZ - 1): "sbx-" + 10 = 14.
  return { container: `sbx-${id}`, network: `sbx-${id}`, bridge: `sbx-${id}` };
}

/**
 * The sandbox network's IPv6 subnet: a unique-local /64 (fd5b::/16 plus 48 bits hashed from the
 * random id), so sandboxes get IPv6 without any host configuration and two never collide in
 * practice. FNV-1a, not node:crypto: this module loads on every command, and crypto is slow to load.
 */
export function ipv6Subnet(id: string): string {
  const fnv = (seed: number) => {
    let h = seed;
    for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193) >>> 0;
    return h.toString(16).padStart(8, '0');
  };
  const h = fnv(0x811c9dc5) + fnv(0x050c5d1f);
  return `fd5b:${h.slice(0, 4)}:${h.slice(4, 8)}:${h.slice(8, 12)}::/64`;
}

/** allow-all with no lists: every sandbox's policy until it is given another. */
export const DEFAULT_POLICY: NetworkPolicy = { mode: 'allow-all', allowOut: [], denyOut: [], allowPorts: [], denyPorts: [] };

/** A policy of one's own to change (a stored one is frozen and shared; so is DEFAULT_POLICY's). */
export function copyPolicy(p: NetworkPolicy): NetworkPolicy {
  return { ...p, allowOut: [...p.allowOut], denyOut: [...p.denyOut], allowPorts: [...p.allowPorts], denyPorts: [...p.denyPorts] };
}

/** Oldest first, in place. ISO times compare as strings; localeCompare costs 7 ms per 1,000 records. */
export function byCreation<T extends { createdAt: string }>(records: T[]): T[] {
  return records.sort((a, b) => (a.createdAt < b.createdAt ? -1 : a.createdAt > b.createdAt ? 1 : 0));
}
