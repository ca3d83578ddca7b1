// `sbx gateway run`: the long-running gateway. It keeps no state of its own: routes come from the
// store, so a restart loses nothing. It also removes sandboxes whose --ttl is up.
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, rmSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { RuntimeError, UsageError } from '../core/errors.ts';
import type { LocalSbx } from '../api/local-sbx.ts';
import { cliEntry } from './daemon.ts';
import { runningGateway } from './state.ts';
import { Relays } from './relays.ts';
import { RouteTable } from './routes.ts';
import { ContainerView } from './container-view.ts';
import { createGatewayServer } from './server.ts';
import { createTlsFront } from './tls-front.ts';
import type { Server } from 'node:http';
import type { Server as TlsServer } from 'node:tls';
import { gatewayFiles, gatewaySettings, type GatewayState, type H2cBy } from './settings.ts';
import { Targets } from './targets.ts';
import { createControlServer, type GatewayOps } from './control.ts';
import { FastPath } from './fastpath.ts';
import { H2Upstreams } from './h2-upstream.ts';
import { refreshCertificate } from './cert-refresh.ts';
import { ServedCertificate, type CertificateFiles } from './served-certificate.ts';
import { writeAtomic } from './write-atomic.ts';
import { findNginx, nginxTakesH2c, workerRunDir } from './nginx.ts';
import { findHaproxy, h2cFrontMissing, H2C_NEEDS_HAPROXY } from './h2c-front.ts';
import { portInUse } from './port-owner.ts';
import { groupName } from '../net/gateway-account.ts';
import { EgressSupervisor } from './egress-supervisor.ts';
import { parserUser } from './egress-user.ts';
import { applyListenerGuard, guardTable, removeListenerGuard } from '../net/listener-guard.ts';
import { TABLE, type EgressListeners } from '../net/nft-rules.ts';
import { keepNftReady } from '../net/nft.ts';
import { watchTables } from '../net/table-watch.ts';
import type { NetworkPolicy } from '../core/network-policy.ts';
import type { SandboxRecord } from '../core/sandbox.ts';
import { dnsUpstream } from './settings.ts';
import { PROTOCOL_VERSION } from '../daemon-client/protocol.ts';
import { VERSION } from '../core/version.ts';
import { startPoolRefill } from './pool-refill.ts';
import { startNetworkLog } from './network-log-service.ts';
import { HostAddresses } from './host-addresses.ts';

export interface RunningGateway {
  state: GatewayState;
  close(): Promise<void>;
}

/** Docker events that change whether a sandbox runs (its pooled connections are dropped then). */
const STATE_ACTIONS = new Set(['start', 'restart', 'pause', 'unpause', 'die', 'stop', 'kill', 'destroy', 'oom']);
/** Container events around which a sandbox's subnet may come or go. */
const SUBNET_ACTIONS = new Set(['create', 'start', 'restart', 'die', 'destroy']);

const log = (line: string) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);

function msFromEnv(name: string, fallback: number): number {
  const v = process.env[name];
  return v && /^\d+$/.test(v) ? Number(v) : fallback;
}

/** Who may use the control socket besides root (the agent's: the engine socket's group). */
export interface ControlAccess {
  gid: number;
  mode: number;
}

export async function runGateway(sbx: LocalSbx, helloExtra: { build?: string; config?: string } = {}, access?: ControlAccess): Promise<RunningGateway> {
  const home = sbx.home;
  const other = runningGateway(home);
  if (other && other.pid !== process.pid) throw new RuntimeError(`a gateway already runs for ${home} (pid ${other.pid}, port ${other.port})`);
  const settings = gatewaySettings();
  const files = gatewayFiles(home);
  const runtime = await sbx.runtime();
  // It puts rules and DNS beside the engine's bridges: an engine whose bridges are elsewhere
  // (remote, a VM, another namespace) is refused rather than served with rules that do not apply.
  const { assertEngineHere } = await import('../net/engine-here.ts');
  await assertEngineHere(runtime, home, `the gateway of ${home}`);
  const relays = new Relays(files.run, join(dirname(cliEntry()), 'relay.cjs'));
  const targets = new Targets(sbx, runtime, relays, msFromEnv('SBX_START_TIMEOUT_MS', 30_000));
  const routes = new RouteTable(sbx.store);
  // Docker's view of the home's containers, kept from its events: for the fast path's routes and
  // for `sbx ls` and `inspect` asked of this daemon.
  const containers = new ContainerView(runtime, home);
  sbx.useContainerView(containers);
  const startedAt = new Date().toISOString();
  const upstreamTimeoutMs = msFromEnv('SBX_UPSTREAM_TIMEOUT_MS', 60_000);
  // nginx carries the public ports of running sandboxes when it is installed (the fast path);
  // SBX_GATEWAY_ENGINE=node keeps everything in this process.
  const nginxBin = process.env.SBX_GATEWAY_ENGINE === 'node' ? undefined : findNginx();
  // h2c beside HTTP/1.1 on one plaintext port: nginx 1.25.1 and later tell them apart themselves;
  // for an older one (Debian's 1.22), HAProxy in front does (h2c-front.ts).
  const nativeH2c = !!nginxBin && !settings.tls && settings.h2c !== false && nginxTakesH2c(nginxBin);
  const haproxyBin = nginxBin && !nativeH2c && !settings.tls && settings.h2c !== false ? findHaproxy() : undefined;
  if (h2cFrontMissing(settings, nginxBin)) throw new UsageError(H2C_NEEDS_HAPROXY);
  // The certificate first: a gateway that cannot serve the HTTPS it announces does not start.
  const ca = settings.tls ? await import('../api/ca.ts') : undefined;
  const credentials = ca ? await ca.serverCertificate(home, settings.domain) : undefined;
  // What hello tells clients to check the certificate against (an agent's clients have no other way to it).
  const caPem = credentials?.source === 'sbx-ca' && credentials.caPath ? readFileSync(credentials.caPath, 'utf8') : undefined;
  // The pair served, as checked copies: nginx reads them (never files others may replace), and
  // `port expose --domain` checks a name against the certificate served, not one on disk that the
  // refresher refused (state.tlsCert).
  const served = credentials ? new ServedCertificate(files.run) : undefined;
  const engine = nginxBin ? 'nginx' : 'node';
  let fastPath: FastPath | undefined;
  const syncRoutes = () => fastPath?.sync() ?? Promise.resolve();
  /** A sync nobody waits for: a failure is logged (the next change or event syncs again). */
  const resyncRoutes = () => void syncRoutes().catch((err) => log(`could not update routes: ${(err as Error).message}`));

  // Egress: sbx's DNS forwarder and the Host/SNI proxy, for every sandbox of this home. They parse
  // what sandboxes send, so they run in a worker process of their own, as an unprivileged user
  // when there is one (egress-supervisor.ts); this process keeps what needs root: the policy as
  // judged, the kernel's rules and learned addresses, conntrack and the engine.
  const egress = await sbx.egress();
  // Its nft runs (creates, claims, updates) go through libnftables in this process, or else each
  // start from an nft already started.
  if (process.getuid?.() === 0) log(`egress rules: ${await keepNftReady(true)}`);
  // The one writer that lasts: it remembers the shape of each sandbox's rules, and fills them.
  egress.fillWhenUnchanged();
  /** A sandbox's policy as judged now, by its id only (the worker names sandboxes by id). */
  const judgedFrom = (id: string, r: SandboxRecord | undefined) => (r?.id === id ? egress.judgedBy(id, r.network) : undefined);
  const policyOf = (id: string) => judgedFrom(id, routes.findOrRead(id));
  const judged = () => new Map<string, NetworkPolicy>(routes.all().map((r) => [r.id, egress.judgedBy(r.id, r.network).policy]));
  const upstream = dnsUpstream();
  const user = parserUser();
  // Rules are checked against the store and repaired: at start (the listeners' ports are new),
  // before the gateway announces itself, and whenever a sandbox's container starts.
  const enforce = (id: string, why: string) =>
    sbx.enforceNetwork(id).catch((err) => log(`egress: could not ${why} the rules of ${id}: ${(err as Error).message}`));
  let state: GatewayState | undefined;
  // The network log: its book, and the nflog group the rules log to (the listeners carry it, so
  // every writer of this home's rules writes the same).
  const hostAddresses = new HostAddresses();
  // The log judges by what is in memory: a packet or an entry never makes it read the store.
  const netlog = await startNetworkLog({ home, policyOf: (id) => judgedFrom(id, routes.find(id)), isSandbox: (a) => hostAddresses.onSandboxBridge(a), log });
  const logged = (l: EgressListeners): EgressListeners => (netlog.group !== undefined ? { ...l, log: netlog.group } : l);
  const workers: EgressSupervisor = new EgressSupervisor({
    entry: join(dirname(cliEntry()), 'egress-worker.cjs'),
    home,
    upstream,
    user,
    log,
    judged,
    policyOf,
    learn: (id, name, answers) => {
      // Before the kernel opens them (and so before the sandbox connects): its entries name them.
      netlog.book.remember(id, name, answers.map((a) => a.address));
      return egress.learn(id, name, answers, () => policyOf(id));
    },
    networks: () => runtime.listSandboxNetworks(home),
    // The DNS forwarder's and the proxy's decisions, for the network log.
    ...(netlog.enabled ? { events: (events: unknown) => netlog.fromWorker(events) } : {}),
    // A new worker after one died: new ports, so the guard and every sandbox's redirects follow.
    restarted: async (found) => {
      const listeners = logged(found);
      egress.useListeners(listeners);
      await applyListenerGuard(home, listeners, sourceLimit(), true, (why) => log(`egress: ${why}`));
      await Promise.all(routes.all().map((r) => enforce(r.id, 'redirect')));
      if (state && runningGateway(home)?.pid === process.pid) {
        state.egress = listeners;
        writeAtomic(files.state, JSON.stringify(state, null, 2) + '\n');
      }
    },
    fatal: (err) => {
      log(`egress: ${err.message}: the gateway stops (the rules stay in force; the next sbx command starts it again)`);
      // (A worker that dies while the gateway starts: `close` is not there yet, nothing to undo.)
      try {
        void close().then(() => process.exit(1));
      } catch {
        process.exit(1);
      }
    },
  });
  // The worker starts (a Node process of its own) while this one starts the ingress side.
  const egressStarting = workers.start();
  egressStarting.catch(() => {}); // awaited below
  // A start that fails from here on leaves no worker, guard or nginx directory behind.
  /** nginx workers' own directory (when they do not run as root), removed when the gateway stops. */
  let sharedRunDir: string | undefined;
  const unguard = async (err: unknown): Promise<never> => {
    routes.close(); // its file watch would keep the failed process alive
    await workers.close();
    await removeListenerGuard(home).catch(() => {});
    if (sharedRunDir) rmSync(sharedRunDir, { recursive: true, force: true });
    served?.clear(); // its own copies only (their names carry this pid)
    throw err;
  };
  let servedFiles: CertificateFiles | undefined;
  try {
    servedFiles = credentials ? served!.publish(credentials) : undefined;
    if (servedFiles) served!.keepOnly(servedFiles);
  } catch (err) {
    return unguard(err);
  }

  // HTTP/2 to the sandboxes. What a port answered HTTP/2's preface with (learnt by this process on
  // its first HTTP/2 request) lets nginx send that port's HTTP/2 itself, as HTTP/2 or HTTP/1.1.
  const h2 = new H2Upstreams((record, port) => targets.connect(record, port), () => resyncRoutes());
  const server = createGatewayServer({ domain: settings.domain, routes, targets, upstreamTimeoutMs, log, tls: settings.tls, routedDirectly: (id, port) => fastPath?.routesDirectly(id, port) ?? false, h2 });
  // What listens on the gateway's port in the Node engine: the HTTP server itself, or a TLS front for it.
  const front = credentials ? createTlsFront(server, credentials) : server;
  // On the control socket only (see control.ts): web pages cannot reach it.
  const gatewayOps: GatewayOps = {
    health: () => ({ ok: true, pid: process.pid, engine, domain: settings.domain, startedAt, sandboxes: routes.all().length, egressPid: workers.pid }),
    hello: () => ({ protocol: PROTOCOL_VERSION, version: VERSION, pid: process.pid, ...helloExtra, ...(state ? { gateway: { host: state.host, port: state.port, domain: state.domain, ...(state.tls ? { tls: caPem ? { caPem } : {} } : {}) } } : {}) }),
    listener: () => ({ host: settings.host, port: state?.port ?? settings.port }),
    networkLog: (id, filter) => netlog.book.list(id, filter),
    followLog: (id, filter, onEntry, onEnd) => netlog.book.follow(id, filter, onEntry, onEnd),
    reload: async (changed, policiesOnly, portsOnly) => {
      try {
        // A policy update: its rules and the worker's copy are in force already (Egress.apply);
        // open connections are judged again. The store is re-read by the file watch meanwhile.
        if (policiesOnly) return await workers.update({ recheck: true });
        // Ports exposed or removed: the routes are read again and nginx follows (a removed one is
        // out of force when this resolves). No container, address or policy changed.
        if (portsOnly) {
          await routes.refresh();
          return await syncRoutes();
        }
        if (changed) for (const id of changed) containers.changed(id);
        else containers.forget();
        targets.invalidateAll();
        await routes.refresh();
        // A removed sandbox's log goes with it (and its followers end), and what was learnt of its ports.
        const kept = new Set(routes.all().map((r) => r.id));
        netlog.book.keepOnly(kept);
        h2.keepOnly(kept);
        // The worker judges by the new policies and has cut what they deny before this resolves.
        await workers.update({ invalidate: true, recheck: true });
        await syncRoutes();
      } catch (err) {
        // What is served now may be what the change took away (a port made private, a policy
        // tightened): the gateway stops rather than go on with it. The store has the change; the
        // next command starts a gateway that serves it.
        const why = (err as Error).message;
        log(`reload: could not apply the change (${why}): the gateway stops`);
        setImmediate(() => {
          try {
            void close().then(() => process.exit(1), () => process.exit(1));
          } catch {
            process.exit(1); // (still starting: `close` is not there yet)
          }
        });
        throw new RuntimeError(`the gateway could not apply the change (${why}), so it stopped rather than serve the old routes and policies; it starts again, from what the store holds, with sbx gateway start or the next command that needs it`);
      }
    },
  };
  const listen = (...args: unknown[]) => listenOn(server, ...args);
  const listenOn = (on: Server | TlsServer, ...args: unknown[]) =>
    new Promise<void>((resolve, reject) => {
      on.once('error', (err: NodeJS.ErrnoException) =>
        reject(new RuntimeError(err.code === 'EADDRINUSE' ? portInUse(settings.host, settings.port) : `the gateway cannot listen: ${err.message}`)),
      );
      (on.listen as (...a: unknown[]) => void)(...args, () => resolve());
    });

  let port: number;
  // The gateway port's connections per client address, kept in the kernel (listener-guard.ts),
  // once the port is known (the egress worker may restart while the gateway still starts).
  const sourceLimit = () => (port ? { host: settings.host, port, limit: settings.sourceLimit } : undefined);
  if (nginxBin) {
    // nginx listens on the gateway port; this process behind it, on a unix socket. nginx parses
    // what the URLs' users send: its workers run as sbx-gateway too when the parsers do, and then
    // reach the socket and their temp files in a directory of that user's group outside SBX_HOME
    // (private to root); only they (that uid with that group) may open connections into sandboxes.
    const group = user.drop ? groupName(user.gid) : undefined;
    let workerDir = files.run;
    try {
      if (group) sharedRunDir = workerDir = workerRunDir(home, user.gid);
    } catch (err) {
      return unguard(err);
    }
    const nodeSocket = join(workerDir, 'node.sock');
    rmSync(nodeSocket, { force: true });
    await listen(nodeSocket).catch(unguard);
    if (group) {
      try {
        chownSync(nodeSocket, 0, user.gid);
        chmodSync(nodeSocket, 0o660);
      } catch (err) {
        server.close();
        return unguard(err);
      }
    }
    try {
      fastPath = await FastPath.start({ nginxBin, runDir: files.run, home, tempDir: workerDir, workerUser: group ? `${user.name} ${group}` : undefined, host: settings.host, port: settings.port, domain: settings.domain, nodeSocket, upstreamTimeoutMs, routes, containers, ...(servedFiles ? { tls: servedFiles } : {}), nativeH2c, ...(haproxyBin ? { h2cFront: { bin: haproxyBin, ...(group ? { user: { name: user.name, group } } : {}) } } : {}), h2Mode: (id, port) => h2.mode(id, port), sourceLimit: settings.sourceLimit }, log);
    } catch (err) {
      server.close();
      return unguard(err);
    }
    log(`nginx: workers run as ${group ? `${user.name} (socket and temp files in ${workerDir})` : process.getuid?.() === 0 ? 'root' : 'the gateway\'s user'}`);
    log(fastPath.h2cBy === 'nginx' ? `h2c: nginx (${nginxBin}) tells it from HTTP/1.1 on the port itself` : fastPath.h2c ? `h2c: HAProxy (${haproxyBin}) owns the port and hands HTTP/2 with prior knowledge to nginx's http2 listener${group ? `, as ${user.name}` : ''}` : `h2c: not served on this port (${settings.tls ? 'HTTPS: HTTP/2 comes by ALPN' : settings.h2c === false ? 'SBX_GATEWAY_H2C=0' : 'HAProxy is not installed: apt-get install haproxy, or ./scripts/setup'})`);
    port = fastPath.port;
  } else {
    await listenOn(front, settings.port, settings.host).catch(unguard);
    const address = front.address();
    port = typeof address === 'object' && address ? address.port : settings.port;
  }
  const egressListeners: EgressListeners = logged(await egressStarting.catch(async (err) => {
    await fastPath?.stop();
    server.close();
    return unguard(err);
  }));
  egress.useListeners(egressListeners);
  egress.onJudgedChange(() => workers.update({}));
  log(
    user.drop
      ? `egress: the DNS forwarder and the proxy run as ${user.name} (uid ${user.uid}, pid ${workers.pid})`
      : `egress: the DNS forwarder and the proxy run as ${user.name} (pid ${workers.pid}): ${user.why}`,
  );
  // The listeners bind every host address; only connections the kernel redirected from a
  // sandbox's bridge may reach them. Without that guard the gateway does not start.
  await applyListenerGuard(home, egressListeners, sourceLimit()).catch(async (err) => {
    await fastPath?.stop();
    server.close();
    return unguard(err);
  });
  // Every sandbox's rules are back before the control socket answers: a client's first call (the
  // agent's hello, `gateway start`) returns only when they are in force.
  try {
    for (const [id, err] of await egress.restoreAll(() => sbx.store.sandboxes())) log(`egress: could not restore the rules of ${id}: ${err.message}`);
  } catch (err) {
    log(`egress: could not restore the sandboxes' rules: ${(err as Error).message}`);
  }
  // Another program may delete sbx's tables behind its back (a firewall reload's `flush ruleset`):
  // the rules of every sandbox this gateway serves (pooled ones and creates under way included)
  // and its listener guard are put back at once. The shared part goes first, alone: it refuses
  // every sandbox bridge without rules, so that the sandboxes further down the list are refused,
  // not open, until their turn.
  let restoring: Promise<void> | undefined;
  let restoreAgain = false;
  const ruled = () => [...sbx.store.sandboxes(), ...sbx.pool.ruledRecords()];
  const restoreRules = (table: string) => {
    if (restoring) {
      restoreAgain = true;
      return;
    }
    restoring = (async () => {
      do {
        restoreAgain = false;
        log(`egress: the nft table ${table} was deleted by another program: putting the rules back`);
        const failed = new Map<string, Error>();
        const step = (what: string, p: Promise<unknown>) => p.catch((err: Error) => failed.set(what, err));
        // Nothing to protect, nothing to write (a cleanup that dropped an idle table stays done).
        if (ruled().length) await step('the shared part', egress.restoreSkeleton());
        await step('the listener guard', applyListenerGuard(home, workers.listeners ?? egressListeners, sourceLimit(), true, (why) => log(`egress: ${why}`)));
        egress.forgetLearned();
        await step('every sandbox', egress.restoreAll(ruled, { creating: true }).then((errors) => errors.forEach((err, id) => failed.set(id, err))));
        for (const [what, err] of failed) log(`egress: could not restore the rules of ${what}: ${err.message}`);
        log(`egress: the rules are back${failed.size ? ` but for ${failed.size}` : ''}`);
      } while (restoreAgain);
    })().finally(() => (restoring = undefined));
  };

  // create and rm from sbx processes are carried out here while the daemon runs; reload, health.
  // (The agent puts it in a directory shared with the engine's host: SBX_CONTROL_SOCKET.)
  const control = process.env.SBX_CONTROL_SOCKET || join(files.run, 'control.sock');
  rmSync(control, { force: true });
  const controlServer = createControlServer(sbx, gatewayOps, log);
  // Bound beside its name, given its owner and mode, then renamed into place: a client polling for
  // the socket never meets it with the wrong permissions (EACCES) or before it answers.
  // (A random name: agents of one socket directory may have the same pid in their containers.)
  const pending = `${control}.${randomBytes(6).toString('hex')}`;
  await new Promise<void>((resolve, reject) => {
    controlServer.once('error', reject);
    controlServer.listen(pending, () => resolve());
  })
    .then(() => {
      if (access) {
        chownSync(pending, 0, access.gid);
        chmodSync(pending, access.mode);
      }
      renameSync(pending, control);
    })
    .catch(async (err) => {
      controlServer.close();
      rmSync(pending, { force: true });
      await fastPath?.stop();
      server.close();
      return unguard(err);
    });
  // (Started once nothing more can fail the start: it is stopped by close().)
  const tableWatch = watchTables({ [`inet ${TABLE}`]: 'always', [`inet ${guardTable(home)}`]: 'if-absent' }, restoreRules, log);
  // Creates whose process died, removals that did not finish, the warm pool's leftovers; then the
  // pool is refilled in the background.
  const reconciled = sbx.reconcileStale((line) => log(`reconcile: ${line}`));
  const stopRefill = startPoolRefill(sbx, reconciled, log);
  // HTTPS: a certificate renewed (sbx's own, near its end) or replaced on disk (SBX_TLS_CERT) is
  // served without a restart, by nginx or by the Node engine's TLS front.
  const stopCertRefresh = credentials && ca
    ? refreshCertificate({
        served: credentials,
        load: () => ca.serverCertificate(home, settings.domain),
        // A sandbox URL's name (any label under the domain), the domain (tunnels), and names of one's own.
        names: () => [`8000-sbx-url.${settings.domain}`, settings.domain, ...routes.customDomains()],
        apply: async (next) => {
          const pair = served!.publish(next);
          if (fastPath) await fastPath.reloadCertificate(pair);
          else (front as TlsServer).setSecureContext({ cert: next.cert, key: next.key, minVersion: 'TLSv1.2' });
          if (state && runningGateway(home)?.pid === process.pid) {
            state.tlsCert = pair.cert;
            writeAtomic(files.state, JSON.stringify(state, null, 2) + '\n');
          }
          served!.keepOnly(pair);
        },
        log,
      })
    : () => {};
  const h2cBy = h2cTaker(settings.tls, fastPath);
  state = { pid: process.pid, host: settings.host, port, domain: settings.domain, startedAt, engine, ...(settings.tls ? { tls: true } : {}), h2c: h2cBy !== undefined, ...(h2cBy ? { h2cBy } : {}), ...(credentials?.source === 'sbx-ca' ? { tlsCa: credentials.caPath } : {}), ...(servedFiles ? { tlsCert: servedFiles.cert } : {}), control, dockerHost: process.env.DOCKER_HOST ?? '', egress: workers.listeners ? logged(workers.listeners) : egressListeners, dnsUpstream: `${upstream.host}:${upstream.port}`, egressUser: user.name, networkLog: netlog.describe(), protocol: PROTOCOL_VERSION, version: VERSION };
  mkdirSync(home, { recursive: true });
  writeAtomic(files.state, JSON.stringify(state, null, 2) + '\n');
  writeAtomic(files.pid, `${process.pid}\n`);
  log(`gateway listening on ${settings.tls ? 'https' : 'http'}://${settings.host}:${port} for *.${settings.domain} (pid ${process.pid}, ${engine}${credentials ? `; certificate ${credentials.certPath}, ${credentials.source === 'user' ? 'from SBX_TLS_CERT' : 'from the sbx CA (sbx ca)'}` : ''})`);
  log(`egress: dns on :${egressListeners.dns} (upstream ${upstream.host}:${upstream.port}), proxy on :${egressListeners.http} (http) and :${egressListeners.tls} (tls)`);


  // Docker events: a sandbox that stops, pauses or restarts gets a fresh address and relay.
  const stopEvents = runtime.watchSandboxEvents(home, (id, action) => {
    // The start that follows this process's own apply (create, start) has its rules in force.
    if (action === 'start' && !egress.takeFreshApply(id, 3000)) void enforce(id, 'repair');
    // Sandboxes came or went (their subnets with them): the worker reads them again. Not for
    // execs and the like, which a sandbox can cause at will.
    if (SUBNET_ACTIONS.has(action)) void workers.update({ invalidate: true });
    if (STATE_ACTIONS.has(action)) targets.stateChanged(id);
    else targets.invalidate(id);
    relays.stop(id);
    containers.changed(id);
    resyncRoutes();
  }, (connected) => {
    // Changes while the stream was down were not reported: Docker is asked again.
    containers.trustEvents(connected);
    if (connected) {
      void workers.update({ invalidate: true });
      resyncRoutes();
    }
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
    // Policies changed in the store by another writer reach the worker within a second too.
    void workers.update({});
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
      // No new requests first: nothing may start on a gateway that is going away.
      controlServer.close();
      netlog.book.endAll(); // followers' connections would keep the control server open
      clearInterval(reaper);
      stopRefill();
      stopCertRefresh();
      routes.close();
      stopEvents();
      tableWatch.stop(); // before the guard goes: that deletion is this gateway's own
      relays.stopAll();
      await restoring;
      await workers.close();
      netlog.close();
      await removeListenerGuard(home).catch((err) => log(`egress: ${(err as Error).message}`));
      void keepNftReady(false);
      await fastPath?.stop();
      if (sharedRunDir) rmSync(sharedRunDir, { recursive: true, force: true });
      rmSync(control, { force: true });
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
      if (runningGateway(home)?.pid === process.pid) {
        rmSync(files.state, { force: true });
        rmSync(files.pid, { force: true });
      }
      served?.clear(); // this gateway's copies only: another of this home keeps serving its own
      log('gateway stopped');
    })());
  // nginx gone (killed, crashed): this gateway cannot serve its port any more, so it says so and stops.
  if (fastPath) {
    fastPath.onExit = (why) => {
      log(`${why}: the gateway stops`);
      void close().then(() => process.exit(1));
    };
  }
  return { state, close };
}

/** Who takes h2c on the port (GatewayState.h2cBy): nobody over TLS, where HTTP/2 comes by ALPN. */
function h2cTaker(tls: boolean, fastPath: FastPath | undefined): H2cBy | undefined {
  if (tls) return undefined;
  return fastPath ? fastPath.h2cBy : 'node';
}
