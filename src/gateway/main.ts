// `sbx gateway run`: the long-running gateway. It keeps no state of its own: routes come from the
// store, so a restart loses nothing. It also removes sandboxes whose --ttl is up.
import { mkdirSync, rmSync, writeFileSync, renameSync } from 'node:fs';
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
import { createControlServer } from './control.ts';
import { renderNginxConfig, type DirectRoute } from './nginx-config.ts';
import { findNginx, NginxFrontend } from './nginx.ts';
import { objectNames } from '../core/sandbox.ts';
import { createServer as createNetServer } from 'node:net';

export interface RunningGateway {
  state: GatewayState;
  close(): Promise<void>;
}

/** A free TCP port on `host` (for nginx, which cannot report the port it was given with 0). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
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
  let nginx: NginxFrontend | undefined;
  let syncRoutes: () => Promise<void> = async () => {};

  const server = createGatewayServer({
    domain: settings.domain,
    routes,
    targets,
    upstreamTimeoutMs,
    health: () => ({ ok: true, pid: process.pid, engine, domain: settings.domain, startedAt, sandboxes: routes.all().length }),
    log,
    onReload: () => {
      targets.invalidateAll();
      return syncRoutes();
    },
  });
  const listen = (...args: unknown[]) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new RuntimeError(err.code === 'EADDRINUSE' ? `port ${settings.port} on ${settings.host} is in use: set SBX_GATEWAY_PORT to a free port (0 picks one)` : `the gateway cannot listen: ${err.message}`)),
      );
      (server.listen as (...a: unknown[]) => void)(...args, () => resolve());
    });

  let port: number;
  if (nginxBin) {
    const nodeSocket = join(files.run, 'node.sock');
    rmSync(nodeSocket, { force: true });
    await listen(nodeSocket);
    port = settings.port || (await freePort(settings.host));
    nginx = new NginxFrontend(nginxBin, files.run, settings.host, port);
    let version = 0;
    let lastConfig = '';
    // What nginx routes directly now (upstream name -> address and Host): a route that goes away
    // or changes must be out of force before the change that caused it is reported done.
    let lastRoutes = new Map<string, string>();
    const render = async () => {
      const direct: DirectRoute[] = [];
      for (const r of routes.all()) {
        const open = (r.ports ?? []).filter((p) => p.public);
        if (open.length === 0) continue;
        const c = await runtime.inspectContainer(objectNames(r.id).container);
        if (!c || c.state !== 'running' || !c.ip) continue; // sleeping: the Node gateway wakes it
        for (const p of open) {
          direct.push({
            hosts: [`${p.port}-${r.name}.${settings.domain}`, `${p.port}-${r.id}.${settings.domain}`],
            name: `sbx_${r.id}_${p.port}`,
            address: `${c.ip}:${p.port}`,
            ...(r.maskHost ? { hostHeader: r.maskHost.replaceAll('${PORT}', String(p.port)) } : {}),
          });
        }
      }
      // Workers run as the gateway's own user: SBX_HOME (with the socket) is private to it.
      const user = process.getuid?.() === 0 ? 'root' : undefined;
      const routeMap = new Map(direct.map((d) => [d.name, `${d.address} ${d.hostHeader ?? ''}`]));
      return { routeMap, make: (v: number) => renderNginxConfig({ listenHost: settings.host, listenPort: port, nodeSocket, runDir: files.run, routes: direct, version: v, upstreamTimeoutMs, user }) };
    };
    // One sync at a time; a request for a sync during one runs once more after it.
    let running: Promise<void> | undefined;
    let again = false;
    const syncOnce = async () => {
      const { routeMap, make } = await render();
      const probe = make(0);
      if (probe === lastConfig) return;
      const retire = [...lastRoutes].some(([name, value]) => routeMap.get(name) !== value);
      lastConfig = probe;
      lastRoutes = routeMap;
      version++;
      await nginx!.apply(make(version), version, retire);
    };
    syncRoutes = () => {
      if (running) {
        again = true;
        return running.then(() => syncRoutes());
      }
      running = (async () => {
        try {
          do {
            again = false;
            await syncOnce();
          } while (again);
        } finally {
          running = undefined;
        }
      })();
      return running;
    };
    const first = await render();
    lastConfig = first.make(0);
    lastRoutes = first.routeMap;
    version = 1;
    try {
      await nginx.start(first.make(version), version);
    } catch (err) {
      server.close();
      throw new RuntimeError(err instanceof Error && /in use|bind/.test(err.message) ? `port ${port} on ${settings.host} is in use: set SBX_GATEWAY_PORT to a free port (0 picks one)` : `the gateway's nginx did not start: ${(err as Error).message}`);
    }
  } else {
    await listen(settings.port, settings.host);
    const address = server.address();
    port = typeof address === 'object' && address ? address.port : settings.port;
  }
  // create and rm from sbx processes are carried out here while the daemon runs.
  const control = join(files.run, 'control.sock');
  rmSync(control, { force: true });
  const controlServer = createControlServer(sbx, log);
  await new Promise<void>((resolve, reject) => {
    controlServer.once('error', reject);
    controlServer.listen(control, () => resolve());
  });
  const state: GatewayState = { pid: process.pid, host: settings.host, port, domain: settings.domain, startedAt, engine, control, dockerHost: process.env.DOCKER_HOST ?? '' };
  mkdirSync(home, { recursive: true });
  writeAtomic(files.state, JSON.stringify(state, null, 2) + '\n');
  writeAtomic(files.pid, `${process.pid}\n`);
  log(`gateway listening on http://${settings.host}:${port} for *.${settings.domain} (pid ${process.pid}, ${engine})`);

  // Docker events: a sandbox that stops, pauses or restarts gets a fresh address and relay.
  const stopEvents = runtime.watchSandboxEvents(home, (id) => {
    targets.invalidate(id);
    relays.stop(id);
    syncRoutes().catch((err) => log(`could not update routes: ${(err as Error).message}`));
  });

  // --ttl: remove sandboxes whose time is up (checked every second, from the store).
  const reaping = new Set<string>();
  const reaper = setInterval(() => {
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
      await nginx?.stop();
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
