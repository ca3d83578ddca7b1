// Host mode puts a sandbox's egress rules into this process's kernel, keyed on the name of the
// sandbox's bridge: they apply only when the engine's bridges are in this network namespace. An
// engine elsewhere (another machine, Docker Desktop's VM, another namespace) makes its bridges
// where sbx never sees them, and its sandboxes would run with no rule at all while sbx shows the
// policy. So before a sandbox's container is made or started, its bridge must be here, carrying
// the subnet the engine gave the network; and a gateway does not start for an engine whose
// bridges are elsewhere. A check that cannot be made is a refusal.
import { existsSync, readFileSync } from 'node:fs';
import { RuntimeError } from '../core/errors.ts';
import { objectNames } from '../core/sandbox.ts';
import { describeEngine } from '../runtime/errors.ts';
import type { Runtime } from '../runtime/docker.ts';

/** Whether interface `name` is in this network namespace (a stat). */
export function interfaceHere(name: string): boolean {
  return existsSync(`/sys/class/net/${name}`);
}

/** An IPv4 address as /proc/net/route prints it: its bytes in host (little-endian) order, in hex. */
function procHex(address: string): string {
  return address.split('.').reverse().map((o) => Number(o).toString(16).padStart(2, '0')).join('').toUpperCase();
}

/**
 * Whether interface `bridge` is in this network namespace with `subnet` (the engine's network,
 * e.g. "172.18.0.0/16") on it. The name alone is not proof: a sandbox's network may exist on two
 * engines (its home was used with this one, then DOCKER_HOST changed), and the bridge here is then
 * the other engine's; both hold the same subnet only when both engines picked the same one. The
 * subnet is read from the kernel's routes (/proc/net/route, a connected route per address): the
 * interface list Node gives (getifaddrs) leaves out a bridge without carrier, as a sandbox's is
 * until its container starts. `routes`: that file's text, when the caller read it once for many.
 */
export function bridgeHere(bridge: string, subnet: string, routes?: string): boolean {
  if (!interfaceHere(bridge)) return false; // the cheap answer for the common refusal
  const [address, bits] = subnet.split('/');
  const mask = Number(bits);
  if (!address || !/^\d+\.\d+\.\d+\.\d+$/.test(address) || !(mask >= 0 && mask <= 32)) return false;
  const dest = procHex(address);
  const m = mask === 0 ? 0 : (0xffffffff << (32 - mask)) >>> 0;
  const netmask = procHex([24, 16, 8, 0].map((shift) => (m >>> shift) & 0xff).join('.'));
  routes ??= kernelRoutes();
  if (routes === undefined) return false; // a check that cannot be made refuses
  for (const line of routes.split('\n')) {
    const f = line.split('\t');
    if (f[0] === bridge && f[1] === dest && f[7] === netmask) return true;
  }
  return false;
}

/** /proc/net/route, or undefined when it cannot be read. */
function kernelRoutes(): string | undefined {
  try {
    return readFileSync('/proc/net/route', 'utf8');
  } catch {
    return undefined;
  }
}

/** The refusal: `what` (e.g. "sandbox web") was not started. */
export function engineElsewhere(what: string): RuntimeError {
  return new RuntimeError(
    `the Docker engine at ${describeEngine()} runs in another network namespace or on another machine: sbx's egress rules would not reach its sandboxes, so ${what} was not started (use the sbx agent for remote engines)`,
  );
}

/**
 * Refuses to run a sandbox whose bridge is not here (see bridgeHere): its rules would not apply.
 * `network`: the engine's network of the sandbox, as it reports it.
 */
export function assertBridgeHere(id: string, name: string, network: { subnet: string }): void {
  if (!bridgeHere(objectNames(id).bridge, network.subnet)) throw engineElsewhere(`sandbox ${name}`);
}

/**
 * Refuses to make the network of a sandbox whose bridge already exists here while the engine has
 * no network for it: that bridge belongs to another engine (or is not Docker's), so the check
 * after the network is made would pass for the wrong bridge.
 */
export function assertNoStrayBridge(id: string, name: string): void {
  const { bridge } = objectNames(id);
  if (interfaceHere(bridge)) {
    throw new RuntimeError(
      `the Docker engine at ${describeEngine()} has no network for sandbox ${name}, yet its bridge ${bridge} exists here: it belongs to another engine (was DOCKER_HOST changed?), so sbx's egress rules would not reach this engine's sandbox, and sandbox ${name} was not started (use the DOCKER_HOST it was created with)`,
    );
  }
}

/**
 * Refuses an engine whose bridges are elsewhere, for the gateway's start: the engine's default
 * bridge (docker0, when it has one) and the bridge of every sandbox network of `home` it holds
 * must be here. An engine that looks like this host (a remote docker0 with the same address as the
 * local one) passes; each sandbox's own check still refuses it.
 */
export async function assertEngineHere(runtime: Runtime, home: string, what: string): Promise<void> {
  const [docker0, networks] = await Promise.all([runtime.defaultBridge(), runtime.listSandboxNetworks(home)]);
  // Read once for all of them: a thousand sandboxes have a thousand routes (read per network, the
  // start took 2 s of CPU for this alone).
  const routes = kernelRoutes();
  if (routes === undefined) throw engineElsewhere(what);
  if (docker0 && !bridgeHere(docker0.bridge, docker0.subnet, routes)) throw engineElsewhere(what);
  for (const [id, network] of networks) {
    if (!bridgeHere(objectNames(id).bridge, network.subnet, routes)) throw engineElsewhere(what);
  }
}
