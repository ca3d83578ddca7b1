// sbx's own address plan: every sandbox network gets a small IPv4 subnet (a /28) from one pool sbx
// owns, instead of a /16 or /20 from Docker's default pools (about 31 networks in all). Pure logic:
// which subnets are free, given what is taken (Docker's networks, the host's routes).
import ipaddr from 'ipaddr.js';
import { addressToBigInt, bigIntToAddress, mergeCidrs, type Span } from './address-ranges.ts';
import { UsageError } from './errors.ts';

/** Outside Docker's default pools (172.17-31/16, 192.168/16 in /20s) and common LANs and VPNs. */
export const DEFAULT_SUBNET_POOL = '10.211.0.0/16';
/** Per sandbox: a /28 (the bridge, the container, room for more), 4,096 of them in a /16. */
export const SANDBOX_PREFIX = 28;

export interface SubnetPool {
  cidr: string;
  /** The pool's first address, as a number. */
  start: bigint;
  /** How many /28 subnets it holds. */
  count: number;
}

/** SBX_SUBNET_POOL (or the default), checked: an IPv4 CIDR of /8 to /28. */
export function subnetPool(value: string | undefined = process.env.SBX_SUBNET_POOL): SubnetPool {
  const raw = value?.trim() || DEFAULT_SUBNET_POOL;
  const bad = (why: string) => new UsageError(`SBX_SUBNET_POOL=${raw}: ${why}; expected an IPv4 CIDR from /8 to /${SANDBOX_PREFIX}, such as ${DEFAULT_SUBNET_POOL}`);
  let parsed: [ipaddr.IPv4 | ipaddr.IPv6, number];
  try {
    if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(raw)) throw new Error('form');
    parsed = ipaddr.parseCIDR(raw);
  } catch {
    throw bad('not an IPv4 CIDR');
  }
  const [addr, bits] = parsed;
  if (bits < 8 || bits > SANDBOX_PREFIX) throw bad(`a /${bits}`);
  const size = 1n << BigInt(32 - bits);
  const start = (addressToBigInt(addr) / size) * size;
  if (start !== addressToBigInt(addr)) throw bad(`host bits set (the network is ${bigIntToAddress(start, 4)}/${bits})`);
  return { cidr: raw, start, count: 2 ** (SANDBOX_PREFIX - bits) };
}

const BLOCK = 1n << BigInt(32 - SANDBOX_PREFIX);

/** The pool's i-th /28, and its first host address (the bridge's, the sandbox's gateway). */
export function poolSubnet(pool: SubnetPool, i: number): { subnet: string; gateway: string } {
  const base = pool.start + BigInt(i) * BLOCK;
  return { subnet: `${bigIntToAddress(base, 4)}/${SANDBOX_PREFIX}`, gateway: bigIntToAddress(base + 1n, 4) };
}

/**
 * Free subnets of the pool, none overlapping `taken` (CIDRs of either family; IPv6 ones are
 * ignored), in pool order from `from` (wrapping round): a random start spreads concurrent creates.
 */
export function* freeSubnets(pool: SubnetPool, taken: readonly string[], from = 0): Generator<{ subnet: string; gateway: string }> {
  const spans: Span[] = mergeCidrs(taken, 4);
  const overlaps = (lo: bigint, hi: bigint) => spans.some(([a, b]) => a <= hi && lo <= b);
  for (let k = 0; k < pool.count; k++) {
    const i = (from + k) % pool.count;
    const lo = pool.start + BigInt(i) * BLOCK;
    if (!overlaps(lo, lo + BLOCK - 1n)) yield poolSubnet(pool, i);
  }
}

/**
 * How long a freed subnet rests before another sandbox is given it: longer than the gateway's
 * nginx lets an old worker finish what it began (worker_shutdown_timeout, 10 s) after the reload
 * that took the removed sandbox's route (which may wait behind a sync of up to ~12 s), so a request
 * begun for the removed sandbox can never be carried to the next one on its address.
 */
export const SUBNET_REST_MS = 30_000;

/** Subnets freed less than SUBNET_REST_MS ago, by when each may be given again (ms since the epoch). */
export type RestingSubnets = Record<string, number>;

/** `resting` without the subnets whose rest is over (none rests longer than SUBNET_REST_MS from now: the clock may have gone back). */
export function stillResting(resting: RestingSubnets | undefined, now = Date.now()): RestingSubnets {
  const left: RestingSubnets = {};
  for (const [subnet, until] of Object.entries(resting ?? {})) if (until > now) left[subnet] = Math.min(until, now + SUBNET_REST_MS);
  return left;
}
