// `sbx gateway run`: the long-running gateway. It keeps no state of its own: routes come from the
// store, so a restart loses nothing. It also removes sandboxes whose --ttl is up.
import { existsSync, mkdirSync, rmSync, writeFileSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import type { Sbx } from '../api/sbx.ts';
import { cliEntry } from './daemon.ts';
import { runningGateway } from './state.ts';
import { Relays } from './relays.ts';
import { RouteTable } from './routes.ts';
import { createGatewayServer } from './server.ts';
import { gatewayFiles, gatewaySettings, type GatewayState } from './settings.ts';
import { Targets } from './targets.ts';
import { createControlServer, type GatewayOps } from './control.ts';
import { FastPath } from './fastpath.ts';
import { findNginx } from './nginx.ts';
import { DnsForwarder } from './dns-forwarder.ts';
import { EgressProxy } from './egress-proxy.ts';
import { SandboxSources } from './sandbox-sources.ts';
import { UpstreamResolver } from './upstream.ts';
import { HostAddresses } from './host-addresses.ts';
import { applyListenerGuard, removeListenerGuard } from '../net/listener-guard.ts';
import { dnsUpstream } from './settings.ts';

export interface RunningGateway {
  state: GatewayState;
  close(): Promise<void>;
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
}

const log = (line: string) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);

function msFromEnv(name: string, fallback: number): number {
  const v = process.env[name];
  return v && /^\d+$/.test(v) ? Number(v) : fallback;
}

export async function runGateway(sbx: Sbx): Promise<RunningGateway> {
  const home = sbx.home;
  const other = runningGateway(home);
  if (other && other.pid !== process.pid) throw new RuntimeError(`a gateway already runs for ${home} (pid ${other.pid}, port ${other.port})`);
  const settings = gatewaySettings();
  const files = gatewayFiles(home);
  const runtime = await sbx.runtime();
  const relays = new Relays(files.run, join(dirname(cliEntry()), 'relay.cjs'));
  const targets = new Targets(sbx, runtime, relays, msFromEnv('SBX_START_TIMEOUT_MS', 30_000));
  const routes = new RouteTable(sbx.store);
  const startedAt = new Date().toISOString();
  const upstreamTimeoutMs = msFromEnv('SBX_UPSTREAM_TIMEOUT_MS', 60_000);
  // nginx carries the public ports of running sandboxes when it is installed (the fast path);
  // SBX_GATEWAY_ENGINE=node keeps everything in this process.
  const nginxBin = process.env.SBX_GATEWAY_ENGINE === 'node' ? undefined : findNginx();
  const engine = nginxBin ? 'nginx' : 'node';
  let fastPath: FastPath | undefined;
  const syncRoutes = () => fastPath?.sync() ?? Promise.resolve();

  // Egress: sbx's DNS forwarder and the Host/SNI proxy, for every sandbox of this home.
  const egress = await sbx.egress();
  const sources = new SandboxSources(runtime, home);
  const policyOf = (id: string) => {
    const r = routes.find(id);
    return r ? egress.judgedBy(id, r.network) : undefined;
  };
  const upstream = dnsUpstream();
  // The proxy connects from the host: it must know the host's own addresses and the sandboxes'.
  const hostAddresses = new HostAddresses();
  const isHost = (a: string) => hostAddresses.has(a);
  const isSandbox = async (a: string) => (await sources.owner(a)) !== undefined;
  const dns = new DnsForwarder({ upstream, sandboxOf: (a) => sources.find(a), policyOf, learn: (id, name, addrs) => egress.learn(id, name, addrs, () => policyOf(id)), isHost, isSandbox, log });
  const proxy = new EgressProxy({ sandboxOf: (a) => sources.find(a), policyOf, resolver: new UpstreamResolver(upstream), isHost, isSandbox, log });
  const egressListeners = { dns: await dns.listen(), ...(await proxy.listen()) };
  egress.useListeners(egressListeners);
  // The listeners bind every host address; only connections the kernel redirected from a
  // sandbox's bridge may reach them. Without that guard the gateway does not start.
  // A start that fails from here on leaves no guard behind (nor listeners).
  const unguard = async (err: unknown): Promise<never> => {
    dns.close();
    proxy.close();
    await removeListenerGuard(home).catch(() => {});
    throw err;
  };
  await applyListenerGuard(home, egressListeners).catch(unguard);

  const server = createGatewayServer({ domain: settings.domain, routes, targets, upstreamTimeoutMs, log });
  // On the control socket only (see control.ts): web pages cannot reach it.
  const gatewayOps: GatewayOps = {
    health: () => ({ ok: true, pid: process.pid, engine, domain: settings.domain, startedAt, sandboxes: routes.all().length }),
    reload: () => {
      targets.invalidateAll();
      routes.invalidate();
      sources.invalidate();
      proxy.recheck();
      return syncRoutes().catch((err) => {
        log(`reload: could not update routes: ${(err as Error).message}`);
        throw err;
      });
    },
  };
  const listen = (...args: unknown[]) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new RuntimeError(err.code === 'EADDRINUSE' ? `port ${settings.port} on ${settings.host} is in use: set SBX_GATEWAY_PORT to a free port (0 picks one)` : `the gateway cannot listen: ${err.message}`)),
      );
      (server.listen as (...a: unknown[]) => void)(...args, () => resolve());
    });

  let port: number;
  if (nginxBin) {
    // nginx listens on the gateway port; this process behind it, on a unix socket.
    const nodeSocket = join(files.run, 'node.sock');
    rmSync(nodeSocket, { force: true });
    await listen(nodeSocket).catch(unguard);
    try {
      fastPath = await FastPath.start({ nginxBin, runDir: files.run, host: settings.host, port: settings.port, domain: settings.domain, nodeSocket, upstreamTimeoutMs, routes, runtime });
    } catch (err) {
      server.close();
      return unguard(err);
    }
    port = fastPath.port;
  } else {
    await listen(settings.port, settings.host).catch(unguard);
    const address = server.address();
    port = typeof address === 'object' && address ? address.port : settings.port;
  }
  // create and rm from sbx processes are carried out here while the daemon runs; reload, health.
  const control = join(files.run, 'control.sock');
  rmSync(control, { force: true });
  const controlServer = createControlServer(sbx, gatewayOps, log);
  await new Promise<void>((resolve, reject) => {
    controlServer.once('error', reject);
    controlServer.listen(control, () => resolve());
  }).catch(unguard);
  // Rules are checked against the store and repaired: at start (the listeners' ports are new),
  // before the gateway announces itself, and whenever a sandbox's container starts.
  const enforce = (id: string, why: string) =>
    sbx.enforceNetwork(id).catch((err) => log(`egress: could not ${why} the rules of ${id}: ${(err as Error).message}`));
  await Promise.all(routes.all().map((r) => enforce(r.id, 'restore')));
  void sbx.reconcileStale((line) => log(`reconcile: ${line}`)); // creates whose process died, removals that did not finish
  const state: GatewayState = { pid: process.pid, host: settings.host, port, domain: settings.domain, startedAt, engine, control, dockerHost: process.env.DOCKER_HOST ?? '', egress: egressListeners, dnsUpstream: `${upstream.host}:${upstream.port}` };
  mkdirSync(home, { recursive: true });
  writeAtomic(files.state, JSON.stringify(state, null, 2) + '\n');
  writeAtomic(files.pid, `${process.pid}\n`);
  log(`gateway listening on http://${settings.host}:${port} for *.${settings.domain} (pid ${process.pid}, ${engine})`);
  log(`egress: dns on :${egressListeners.dns} (upstream ${upstream.host}:${upstream.port}), proxy on :${egressListeners.http} (http) and :${egressListeners.tls} (tls)`);


  // Docker events: a sandbox that stops, pauses or restarts gets a fresh address and relay.
  const stopEvents = runtime.watchSandboxEvents(home, (id, action) => {
    // The start that follows this process's own apply (create, start) has its rules in force.
    if (action === 'start' && !egress.takeFreshApply(id, 3000)) void enforce(id, 'repair');
    sources.invalidate();
    targets.invalidate(id);
    relays.stop(id);
    syncRoutes().catch((err) => log(`could not update routes: ${(err as Error).message}`));
  });

  // --ttl: remove sandboxes whose time is up (checked every second, from the store).
  const reaping = new Set<string>();
  const reaper = setInterval(() => {
    // A home removed under a running gateway (rm -rf of a test or bench world): nothing to serve.
    if (!existsSync(home)) {
      log(`${home} is gone: stopping`);
      void close().then(() => process.exit(0));
      return;
    }
    const now = Date.now();
    for (const r of routes.all()) {
      if (!r.expiresAt || Date.parse(r.expiresAt) > now || reaping.has(r.id)) continue;
      reaping.add(r.id);
      sbx.remove(r.id, { force: true }).then(
        () => log(`removed ${r.name}: its ttl ran out`),
        (err) => log(`could not remove ${r.name} at the end of its ttl: ${(err as Error).message}`),
      ).finally(() => reaping.delete(r.id));
    }
  }, 1000);

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      clearInterval(reaper);
      routes.close();
      stopEvents();
      relays.stopAll();
      dns.close();
      proxy.close();
      await removeListenerGuard(home).catch((err) => log(`egress: ${(err as Error).message}`));
      await fastPath?.stop();
      controlServer.close();
      rmSync(control, { force: true });
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
      if (runningGateway(home)?.pid === process.pid) {
        rmSync(files.state, { force: true });
        rmSync(files.pid, { force: true });
      }
      log('gateway stopped');
    })());
  return { state, close };
}
