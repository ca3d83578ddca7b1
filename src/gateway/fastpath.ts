// The fast path: the gateway's own nginx carries the public ports of running sandboxes straight to
// them (see nginx-config.ts). This module decides what nginx routes, from the store and Docker's
// state, and keeps nginx in step: one sync at a time, and a change that removes or alters a route
// is in force before sync() resolves. A change that only adds routes is applied after a short quiet
// time instead (ADD_QUIET_MS): the Node gateway serves new routes meanwhile.
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import { objectNames } from '../core/sandbox.ts';
import { isOwnHost, maskHost } from '../core/ports.ts';
import type { ContainerView } from './container-view.ts';
import { renderNginxConfig, type DirectRoute } from './nginx-config.ts';
import { NginxFrontend, nginxTakesH2c, probeVersion, versionAnswer } from './nginx.ts';
import type { RouteTable } from './routes.ts';
import { endStaleHaproxy, endStaleNginx, portInUse } from './port-owner.ts';
import { frontMaxconn, H2cFront } from './h2c-front.ts';
import { renderH2cFrontConfig } from './haproxy-config.ts';
import { hardOpenFiles } from './open-files.ts';
import type { CertificateFiles } from './served-certificate.ts';
import { gatewayAddress } from '../net/listener-guard.ts';

/** nginx's workers may raise their open files up to this process's hard limit, not past it. */
const openFiles = hardOpenFiles();

export interface FastPathOptions {
  nginxBin: string;
  runDir: string;
  /** The SBX_HOME whose sandboxes these are (their containers are listed by its label). */
  home: string;
  host: string;
  /** 0 picks a free port. */
  port: number;
  domain: string;
  /** The Node gateway's unix socket: where everything that is not direct goes. */
  nodeSocket: string;
  /** Where nginx's temp files go (default: runDir); the workers' user must reach it. */
  tempDir?: string;
  /** The workers' `user [group]` (default: root when started as root, so they reach SBX_HOME). */
  workerUser?: string;
  upstreamTimeoutMs: number;
  routes: RouteTable;
  /** Docker's view of the home's containers, kept between syncs. */
  containers: ContainerView;
  /** Serve HTTPS with this certificate and key (PEM files): SBX_GATEWAY_TLS. */
  tls?: CertificateFiles;
  /**
   * Plain HTTP with h2c: HAProxy (this binary) owns the port and nginx listens on unix sockets in
   * tempDir behind it (haproxy-config.ts); it runs as `user` after binding, when given.
   */
  h2cFront?: { bin: string; user?: { name: string; group: string } };
  /** Plain HTTP with h2c served by nginx itself on the port (nginx >= 1.25.1: nginx.ts nginxTakesH2c); no front. */
  nativeH2c?: boolean;
  /** What the Node gateway learnt a sandbox port speaks: HTTP/2 or HTTP/1.1 (nginx-config.ts DirectRoute.h2). */
  h2Mode?: (id: string, port: number) => 'h1' | 'h2' | undefined;
  /** SBX_GATEWAY_SOURCE_LIMIT: requests in flight per client address, in nginx (connections: listener-guard.ts); 0: none. */
  sourceLimit?: number;
}

/**
 * Connections the h2c front carries at once: each takes two descriptors in HAProxy, and in nginx's
 * worker (WORKER_CONNECTIONS in nginx-config.ts, 16,384) the connection and at least one upstream
 * one: 6,000 of them leave about 4,000 for idle upstream connections and HTTP/2's extra streams.
 */
const FRONT_MAXCONN = 6000;

/** A route's `h2` when the port's protocol is known. */
const withH2 = (h2: 'h1' | 'h2' | undefined) => (h2 ? { h2 } : {});

/** Resolves false when `port` on `host` is taken (by anyone, on any address that covers it). */
function canBind(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen({ port, host, exclusive: true }, () => s.close(() => resolve(true)));
  });
}

/** A free TCP port on `host` (nginx cannot report the port it was given with 0). */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, host, () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

/**
 * How long a change that only adds routes waits before nginx reloads. A reload with a thousand
 * routes costs nginx about 0.3 s of CPU (it parses them all again and starts a new worker): done at
 * once, it competes on 2 cores with the command that made the change and with the first requests
 * to the new route, which the Node gateway serves until the reload anyway. Waiting lets those
 * finish first and makes one reload of a burst of creates or exposes.
 */
export const ADD_QUIET_MS = 300;

/** Same routes, same values (name -> "address host-header hosts"). */
function sameRoutes(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  if (a.size !== b.size) return false;
  for (const [name, value] of a) if (b.get(name) !== value) return false;
  return true;
}

export class FastPath {
  readonly port: number;
  readonly #o: FastPathOptions;
  readonly #nginx: NginxFrontend;
  readonly #front?: H2cFront;
  /** nginx's sockets behind the h2c front. */
  readonly #sockets?: { h1Socket: string; h2cSocket: string; controlSocket: string };
  #version = 1;
  /** upstream name -> "address host-header hosts" of what nginx was last given. */
  #lastRoutes = new Map<string, string>();
  #running?: Promise<void>;
  #again = false;
  /** A change that only adds routes waits for this timer (ADD_QUIET_MS); a sync in between takes it along. */
  #quiet?: NodeJS.Timeout;
  /** The timer fired: the next sync applies added routes too. */
  #addNow = false;
  #log?: (line: string) => void;
  /** A failed apply: what nginx serves is unknown, so the next one is applied and waited for. */
  #unsure = false;
  /** The certificate files nginx is given (HTTPS); they change when the certificate does. */
  #tls?: CertificateFiles;
  /**
   * Requests in flight per client address, where clients can be other than local: on a loopback
   * gateway every client is exempt, and nginx would only look each request's address up for nothing.
   */
  readonly #sourceLimit: number;
  /** nginx takes h2c on its own TCP listener (no front). */
  readonly #nativeH2c: boolean;
  /** nginx >= 1.25.1: HTTP/2 is switched on with `http2 on;`. */
  readonly #http2Directive: boolean;

  private constructor(o: FastPathOptions, port: number) {
    this.#o = o;
    this.#tls = o.tls;
    this.#sourceLimit = gatewayAddress(o.host) === 'loopback' ? 0 : (o.sourceLimit ?? 0);
    this.port = port;
    this.#http2Directive = nginxTakesH2c(o.nginxBin);
    this.#nativeH2c = !!o.nativeH2c; // main.ts decides it (renderNginxConfig refuses it without TLS off and nginx >= 1.25.1)
    if (o.h2cFront && !o.tls && !this.#nativeH2c) {
      const shared = o.tempDir ?? o.runDir; // where HAProxy, as the workers' user, reaches them
      this.#sockets = { h1Socket: join(shared, 'nginx-h1.sock'), h2cSocket: join(shared, 'nginx-h2c.sock'), controlSocket: join(o.runDir, 'probe.sock') };
      for (const f of Object.values(this.#sockets)) rmSync(f, { force: true });
      this.#front = new H2cFront(o.h2cFront.bin, o.runDir);
    }
    this.#nginx = new NginxFrontend(o.nginxBin, o.runDir, o.host, port, o.tempDir, !!o.tls, this.#sockets?.controlSocket);
  }

  /** Called when nginx (or the h2c front) exits on its own: the gateway cannot serve any more. */
  set onExit(fn: (why: string) => void) {
    this.#nginx.onExit = fn;
    if (this.#front) this.#front.onExit = fn;
  }

  /** Its port takes HTTP/2 with prior knowledge too (nginx's own listener, or the h2c front). */
  get h2c(): boolean {
    return this.h2cBy !== undefined;
  }

  /** Who tells h2c from HTTP/1.1 on the port: nginx itself, HAProxy's front, or nobody. */
  get h2cBy(): 'nginx' | 'haproxy' | undefined {
    return this.#nativeH2c ? 'nginx' : this.#front ? 'haproxy' : undefined;
  }

  static async start(o: FastPathOptions, log?: (line: string) => void): Promise<FastPath> {
    // An nginx this home's gateway left behind (killed outright) would hold the port: ended first.
    const stale = await endStaleNginx(o.runDir);
    if (stale) log?.(`nginx: ended a stale nginx (pid ${stale}) left by an earlier gateway of this home`);
    const staleFront = await endStaleHaproxy(o.runDir);
    if (staleFront) log?.(`h2c front: ended a stale haproxy (pid ${staleFront}) left by an earlier gateway of this home`);
    if (o.port && !(await canBind(o.host, o.port))) throw new RuntimeError(portInUse(o.host, o.port));
    const fp = new FastPath(o, o.port || (await freePort(o.host)));
    fp.#log = log;
    const first = await fp.#render();
    fp.#lastRoutes = first.routes;
    try {
      await fp.#nginx.start(first.make(fp.#version), fp.#version);
    } catch (err) {
      const msg = (err as Error).message;
      throw new RuntimeError(/in use|bind/.test(msg) ? portInUse(o.host, fp.port) : `the gateway's nginx did not start: ${msg}`);
    }
    if (fp.#front) {
      // Ready once nginx's own answer (this start's token) comes back through the port.
      const answer = versionAnswer(fp.#version, fp.#nginx.instance);
      try {
        const config = renderH2cFrontConfig({ listenHost: o.host, listenPort: fp.port, h1Socket: fp.#sockets!.h1Socket, h2cSocket: fp.#sockets!.h2cSocket, maxconn: frontMaxconn(FRONT_MAXCONN), ...(o.h2cFront!.user ? { user: o.h2cFront!.user } : {}) });
        await fp.#front.start(config, async () => (await probeVersion({ host: o.host, port: fp.port })) === answer);
      } catch (err) {
        await fp.#nginx.stop();
        const msg = (err as Error).message;
        throw new RuntimeError(/in use|cannot bind/.test(msg) ? portInUse(o.host, fp.port) : `the gateway's h2c front (haproxy) did not start: ${msg}; SBX_GATEWAY_H2C=0 runs without it (HTTP/1.1 only on plain HTTP)`);
      }
    }
    return fp;
  }

  /** Brings nginx in step with the store and Docker; concurrent calls share one run (plus one more). */
  sync(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running.then(() => this.sync());
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false;
          await this.#syncOnce();
        } while (this.#again);
      } finally {
        this.#running = undefined;
      }
    })();
    return this.#running;
  }

  async stop(): Promise<void> {
    clearTimeout(this.#quiet);
    await this.#front?.stop();
    await this.#nginx.stop();
  }

  /**
   * nginx serves the certificate in these files (new ones: see served-certificate.ts): resolves once
   * workers that serve it answer. On failure the old files stay in its configuration.
   */
  async reloadCertificate(files: CertificateFiles): Promise<void> {
    const before = this.#tls;
    this.#tls = files;
    this.#unsure = true;
    try {
      await this.sync();
    } catch (err) {
      this.#tls = before;
      throw err;
    }
  }

  /** Does nginx route this port of this sandbox straight to it (as of the last sync)? */
  routesDirectly(id: string, port: number): boolean {
    return this.#lastRoutes.has(`sbx_${id}_${port}`);
  }

  async #syncOnce(): Promise<void> {
    const { routes, make } = await this.#render();
    const addNow = this.#addNow;
    this.#addNow = false;
    if (sameRoutes(routes, this.#lastRoutes) && !this.#unsure) {
      // What waited was taken back (a port exposed, then removed): nginx has it right already.
      clearTimeout(this.#quiet);
      this.#quiet = undefined;
      return;
    }
    // A route that goes away or changes must be out of force before the change is reported done.
    const retire = this.#unsure || [...this.#lastRoutes].some(([name, value]) => routes.get(name) !== value);
    if (!retire && !addNow) {
      this.#quiet ??= setTimeout(() => {
        this.#quiet = undefined;
        this.#addNow = true;
        // A failed apply leaves #unsure: the next sync applies again and waits for it.
        this.sync().catch((err) => this.#log?.(`could not update routes: ${(err as Error).message}`));
      }, ADD_QUIET_MS);
      return;
    }
    clearTimeout(this.#quiet);
    this.#quiet = undefined;
    this.#lastRoutes = routes;
    this.#version++;
    this.#unsure = true;
    await this.#nginx.apply(make(this.#version), this.#version, retire);
    this.#unsure = false;
  }

  /** Public ports of running sandboxes (sleeping ones stay with the Node gateway, which wakes them). */
  async #render(): Promise<{ routes: Map<string, string>; make: (version: number) => string }> {
    const o = this.#o;
    const direct: DirectRoute[] = [];
    const records = o.routes.all().filter((r) => (r.ports ?? []).some((p) => p.public));
    // One list call for every sandbox of the home (not an inspect per sandbox).
    // Docker not answering now: no direct routes, everything goes to the Node gateway (which reads
    // the store and asks Docker itself), rather than a failed sync.
    const containers = records.length ? await o.containers.states(records.map((r) => objectNames(r.id).container)).catch(() => new Map()) : new Map();
    // A name of the user's own goes to the port the route table says holds it (nginx refuses a map
    // with a key twice), and never one under SBX_DOMAIN (stored under another domain): the Node
    // gateway routes those as sbx's own.
    const ownName = (id: string, port: number, domain: string | undefined) => {
      const held = domain && !isOwnHost(domain, o.domain) ? o.routes.findDomain(domain) : undefined;
      return held?.record.id === id && held.port === port ? [domain!] : [];
    };
    for (const r of records) {
      const open = (r.ports ?? []).filter((p) => p.public);
      const c = containers.get(objectNames(r.id).container);
      if (!c || c.state !== 'running' || !c.ip) continue;
      for (const p of open) {
        direct.push({
          hosts: [`${p.port}-${r.name}.${o.domain}`, `${p.port}-${r.id}.${o.domain}`, ...ownName(r.id, p.port, p.domain)],
          name: `sbx_${r.id}_${p.port}`,
          address: `${c.ip}:${p.port}`,
          ...(r.maskHost ? { hostHeader: maskHost(r.maskHost, p.port) } : {}),
          ...withH2(o.h2Mode?.(r.id, p.port)),
        });
      }
    }
    // Workers run as sbx-gateway when the gateway says so (the socket is then where they reach
    // it), else as the gateway's own user: SBX_HOME (with the socket) is private to it.
    const user = o.workerUser ?? (process.getuid?.() === 0 ? 'root' : undefined);
    const routes = new Map(direct.map((d) => [d.name, `${d.address} ${d.hostHeader ?? ''} ${d.hosts.join(',')} ${d.h2 ?? ''}`]));
    const make = (version: number) =>
      renderNginxConfig({ listenHost: o.host, listenPort: this.port, nodeSocket: o.nodeSocket, runDir: o.runDir, tempDir: o.tempDir, routes: direct, version, instance: this.#nginx.instance, upstreamTimeoutMs: o.upstreamTimeoutMs, user, ...(this.#tls ? { tls: this.#tls } : {}), ...(this.#sockets ? { front: this.#sockets } : {}), http2Directive: this.#http2Directive, h2c: this.#nativeH2c, sourceLimit: this.#sourceLimit, ...(openFiles ? { openFiles } : {}) });
    return { routes, make };
  }
}
