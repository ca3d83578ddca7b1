// The gateway's HTTP front: routes `<port>-<sandbox>.<domain>` and `<sandbox>.<domain>/port/<port>/`
// to ports of sandboxes with Node's own http machinery (methods, raw paths, headers and streaming
// bodies pass unchanged; X-Forwarded-* added), carries upgrades (WebSocket) and raw TCP tunnels
// (`sbx port forward`), checks the token of private ports before anything else happens.
import { Agent, createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { constants as h2constants, createServer as createHttp2Server, type ClientHttp2Session, type Http2ServerRequest, type Http2ServerResponse, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { hostName, maskHost, routeHost, routePath } from '../core/ports.ts';
import type { SandboxRecord } from '../core/sandbox.ts';
import { tokensEqual } from '../core/token.ts';
import { findToken, stripToken, TOKEN_COOKIE, withoutQueryToken, type FoundToken } from './auth.ts';
import { crossSiteRefusal } from './cookie-guard.ts';
import { sendError, sendUpgradeError, type GatewayError } from './responses.ts';
import type { RouteTable } from './routes.ts';
import { GatewayFailure, type Targets } from './targets.ts';
import { splice } from '../core/splice.ts';
import { HOP_BY_HOP, relayResponse, spliceUpgrade } from './http-relay.ts';
import { acceptHttp2PriorKnowledge } from './h2c-sniff.ts';
import { H2Upstreams } from './h2-upstream.ts';
const TUNNEL_PATH = /^\/_sbx\/tunnel\/([a-z0-9][a-z0-9-]{0,62})\/(\d{1,5})$/;

export interface ProxyOptions {
  domain: string;
  routes: RouteTable;
  targets: Targets;
  /** How long to wait for the upstream's response headers before answering 504. */
  upstreamTimeoutMs: number;
  /** Does nginx (the fast path) route this port of this sandbox itself now? */
  routedDirectly?: (id: string, port: number) => boolean;
  /** HTTP/2 to the sandboxes, and what their ports speak (shared with the fast path); one of its own when not given. */
  h2?: H2Upstreams;
  /** Clients reach it over HTTPS (SBX_GATEWAY_TLS): X-Forwarded-Proto, Origin and cookies say so. */
  tls?: boolean;
  log: (line: string) => void;
}

/**
 * A request that came from nginx (the fast path) over the gateway's unix socket: nginx already
 * added X-Forwarded-* and may have rewritten Host, so those are taken as nginx set them.
 */
/** HTTP/2 sessions that came in on the unix socket: nginx's gRPC calls (grpc_pass: over HTTPS, or h2c behind HAProxy). */
const internalSessions = new WeakSet<object>();
const internalRequests = new WeakMap<IncomingMessage, boolean>();
function isInternal(req: IncomingMessage): boolean {
  let internal = internalRequests.get(req);
  if (internal === undefined) {
    // HTTP/2: by the session, marked when it began (a reset stream's socket reads as undefined,
    // and a request taken for nginx's would have its X-Forwarded-* believed). Decided once, early.
    internal = isHttp2(req) ? internalSessions.has((req as unknown as Http2ServerRequest).stream?.session ?? {}) : req.socket.remoteAddress === undefined;
    internalRequests.set(req, internal);
  }
  return internal;
}

/** The client's address, read before anything is awaited (a reset stream no longer has one). */
const clientAddresses = new WeakMap<IncomingMessage, string>();
function clientAddress(req: IncomingMessage): string {
  let a = clientAddresses.get(req);
  if (a === undefined) clientAddresses.set(req, (a = req.socket.remoteAddress ?? ''));
  return a;
}

/** The Host the client asked for (behind nginx: X-Forwarded-Host; in HTTP/2: :authority). */
function clientHost(req: IncomingMessage): string | undefined {
  const forwarded = req.headers['x-forwarded-host'];
  if (isInternal(req) && typeof forwarded === 'string' && forwarded) return forwarded;
  return req.headers.host ?? (req.headers[':authority'] as string | undefined);
}

/** A request that came as HTTP/2 (h2c on the gateway's own listener). */
function isHttp2(req: IncomingMessage): boolean {
  return req.httpVersionMajor === 2;
}

/** Names HTTP/2 forbids besides the hop-by-hop ones (RFC 9113 8.2.2; Node throws on them). */
const NOT_IN_HTTP2 = new Set(['host', 'http2-settings']);

/** Headers HTTP/2 forbids, and pseudo-headers: not copied from one hop to the next. */
function h2Headers(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  const connectionTokens = new Set(String(headers.connection ?? '').toLowerCase().split(',').map((t) => t.trim()));
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || name.startsWith(':') || NOT_IN_HTTP2.has(name) || connectionTokens.has(name)) continue;
    if (HOP_BY_HOP.has(name) && !(name === 'te' && value === 'trailers')) continue;
    out[name] = value;
  }
  return out;
}

interface Resolved {
  record: SandboxRecord;
  port: number;
  /** Path and query to send upstream (raw, as received). */
  path: string;
  token?: string;
}

type Resolution = { ok: true; value: Resolved } | { ok: false; error: GatewayError } | { ok: false; redirect: { location: string; token: string } };

/** The token check shared by ports and tunnels: the token when `found` opens `record`. */
function checkToken(req: IncomingMessage, found: FoundToken, record: SandboxRecord, missing: string, tls: boolean): { ok: true; token: string } | { ok: false; error: GatewayError } {
  if (found.token === undefined) return { ok: false, error: { status: 403, code: 'token_missing', message: missing } };
  // Before the comparison: a page of another sandbox learns nothing, not even if the cookie is good.
  if (found.fromCookie) {
    const refused = crossSiteRefusal(req.headers, clientHost(req), tls);
    if (refused) return { ok: false, error: refused };
  }
  if (!record.token || !tokensEqual(found.token, record.token)) {
    return { ok: false, error: { status: 403, code: 'token_invalid', message: `the traffic token for sandbox ${record.name} is wrong` } };
  }
  return { ok: true, token: found.token };
}

export function createGatewayServer(opts: ProxyOptions): Server {
  const scheme = opts.tls ? 'https' : 'http';
  // One keep-alive pool per sandbox port; connections come from Targets (direct or relay).
  const agents = new Map<string, Agent>();
  const agentFor = (record: SandboxRecord, port: number, keepAlive = true): Agent => {
    const key = `${record.id}:${port}${keepAlive ? '' : ':once'}`;
    let agent = agents.get(key);
    if (!agent) {
      agent = new Agent({ keepAlive, maxSockets: Infinity, maxFreeSockets: 256 });
      (agent as unknown as { createConnection: unknown }).createConnection = (_o: unknown, cb: (err: Error | null, s?: Socket) => void) => {
        opts.targets.connect(record, port).then((s) => cb(null, s), (err) => cb(err));
      };
      agents.set(key, agent);
    }
    return agent;
  };
  // When a sandbox changes state its pooled connections go: into a paused sandbox they hang, into a
  // stopped one they fail, and after a wake-up they would keep a server that serves one connection
  // at a time (Python's HTTPServer) from nginx's fast path. Idle ones close now, busy ones when
  // their request ends (a request under way is not cut).
  opts.targets.onStateChange((id) => {
    for (const [key, agent] of agents) {
      if (!key.startsWith(`${id}:`)) continue;
      agents.delete(key);
      for (const list of Object.values(agent.freeSockets)) for (const s of list ?? []) s.destroy();
      agent.on('free', (s: Socket) => s.destroy());
    }
  });

  /** A name of the user's own (`port expose --domain`): the sandbox port it routes to. */
  function domainRoute(host: string | undefined): { kind: 'domain'; record: SandboxRecord; port: number; sandbox: string } | undefined {
    const found = host ? opts.routes.findDomain(hostName(host)) : undefined;
    return found ? { kind: 'domain', ...found, sandbox: found.record.name } : undefined;
  }

  /** Routing and the token: everything that must pass before the sandbox is touched. */
  function resolve(req: IncomingMessage): Resolution | { ok: true; gateway: true } {
    const host = clientHost(req);
    const route = routeHost(host, opts.domain) ?? domainRoute(host);
    if (!route) return { ok: false, error: { status: 404, code: 'unknown_host', message: `${host} is not a sandbox host under ${opts.domain}` } };
    if (route.kind === 'gateway') return { ok: true, gateway: true };
    let port: number;
    let path = req.url ?? '/';
    if (route.kind === 'domain') port = route.port;
    else if (route.kind === 'sandbox') {
      const p = routePath(path);
      if (!p) return { ok: false, error: { status: 404, code: 'no_port', message: `use http://<port>-${route.sandbox}.${opts.domain}/ or the path /port/<port>/ on this host` } };
      port = p.port;
      path = p.path;
    } else port = route.port;
    const record = route.kind === 'domain' ? route.record : opts.routes.find(route.sandbox);
    if (!record) return { ok: false, error: { status: 404, code: 'no_sandbox', message: `no sandbox named ${route.sandbox}` } };
    const exposed = record.ports?.find((p) => p.port === port);
    if (!exposed) return { ok: false, error: { status: 404, code: 'port_not_exposed', message: `port ${port} of sandbox ${record.name} is not exposed (sbx port expose ${record.name} ${port})` } };
    let token: string | undefined;
    if (!exposed.public) {
      const found = findToken(req);
      const checked = checkToken(req, found, record, `port ${port} of sandbox ${record.name} is private: send its traffic token (x-sbx-traffic-token header, Authorization: Bearer, or ?sbx_token=)`, !!opts.tls);
      if (!checked.ok) return checked;
      if (found.fromQuery) return { ok: false, redirect: { location: withoutQueryToken(req.url ?? '/'), token: checked.token } };
      token = checked.token;
    }
    return { ok: true, value: { record, port, path, token } };
  }

  function upstreamHeaders(req: IncomingMessage, r: Resolved, keepUpgrade: boolean): string[] {
    const raw = stripToken(req.rawHeaders, r.token);
    const internal = isInternal(req);
    const out: string[] = [];
    const connectionTokens = new Set(String(req.headers.connection ?? '').toLowerCase().split(',').map((s) => s.trim()));
    let forwardedFor: string | undefined;
    let forwardedProto: string | undefined;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!;
      const lower = name.toLowerCase();
      if (lower.startsWith(':') || lower === 'host' || lower === 'x-forwarded-host' || lower === 'x-sbx-gateway-error') continue;
      if (lower === 'x-forwarded-for') {
        forwardedFor = raw[i + 1];
        continue;
      }
      if (lower === 'x-forwarded-proto') {
        forwardedProto = raw[i + 1];
        continue;
      }
      if (!keepUpgrade && (HOP_BY_HOP.has(lower) || connectionTokens.has(lower))) continue;
      out.push(name, raw[i + 1]!);
    }
    const host = clientHost(req) ?? '';
    out.push('Host', r.record.maskHost ? maskHost(r.record.maskHost, r.port) : host);
    const client = clientAddress(req);
    // Behind nginx the chain is complete already; on its own, the gateway appends the client.
    out.push('X-Forwarded-For', internal ? (forwardedFor ?? '') : forwardedFor ? `${forwardedFor}, ${client}` : client);
    out.push('X-Forwarded-Host', host);
    out.push('X-Forwarded-Proto', internal ? (forwardedProto ?? 'http') : scheme);
    return out;
  }

  function fail(req: IncomingMessage, res: ServerResponse, err: unknown, r: Resolved): void {
    if (err instanceof GatewayFailure) return sendError(req, res, err.error);
    const code = (err as NodeJS.ErrnoException).code;
    opts.log(`upstream error for ${r.record.name}:${r.port}: ${code ?? (err as Error).message}`);
    sendError(req, res, { status: 502, code: 'upstream_error', message: `sandbox ${r.record.name} port ${r.port}: ${code ?? (err as Error).message}` });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    clientAddress(req);
    isInternal(req);
    const resolution = resolve(req);
    if ('gateway' in resolution) return gatewayEndpoint(req, res);
    if (!resolution.ok) {
      if ('redirect' in resolution) {
        // Browsers: ?sbx_token= sets a cookie for this host and comes back without the token.
        res.writeHead(302, {
          location: resolution.redirect.location,
          'set-cookie': `${TOKEN_COOKIE}=${encodeURIComponent(resolution.redirect.token)}; Path=/; Max-Age=604800; HttpOnly; SameSite=Lax${opts.tls ? '; Secure' : ''}`,
          'cache-control': 'no-store',
          'content-length': 0,
        });
        return void res.end();
      }
      return sendError(req, res, resolution.error);
    }
    const r = resolution.value;
    if (isInternal(req) && req.headers['x-sbx-gateway-error'] === 'upstream_timeout') {
      // nginx (the fast path) gave up waiting: answer as the gateway always does.
      return sendError(req, res, { status: 504, code: 'upstream_timeout', message: `sandbox ${r.record.name} port ${r.port} did not answer within ${Math.round(opts.upstreamTimeoutMs / 1000)}s` });
    }
    try {
      await opts.targets.awake(r.record);
    } catch (err) {
      return fail(req, res, err, r);
    }
    if (isHttp2(req)) {
      // The client may reset the stream meanwhile (a deadline, a cancel): its close has fired
      // then, and a call opened to the sandbox after it would never be ended. (The HTTP/2
      // compatibility response has no `closed`: its stream has.)
      const gone = () => (res as unknown as Http2ServerResponse).stream.closed || (res as unknown as Http2ServerResponse).stream.destroyed;
      if (gone()) return;
      let session: ClientHttp2Session | undefined;
      try {
        session = await h2.session(r.record, r.port);
      } catch (err) {
        return fail(req, res, err, r);
      }
      if (gone()) return;
      if (session) return proxyHttp2(req as unknown as Http2ServerRequest, res as unknown as Http2ServerResponse, r, session);
    }
    const up = request({
      // A port nginx routes itself came here because nginx's connect failed (the server was not
      // up yet): no connection is kept, or a server that serves one connection at a time would
      // be held by this idle one while nginx's requests wait.
      agent: agentFor(r.record, r.port, !(isInternal(req) && opts.routedDirectly?.(r.record.id, r.port))),
      method: req.method,
      path: r.path,
      headers: upstreamHeaders(req, r, false) as unknown as Record<string, string>,
      setHost: false,
    });
    // The upstream has this long to answer once the request is sent (uploads take what they take).
    let timer: NodeJS.Timeout | undefined;
    up.on('finish', () => {
      timer = setTimeout(() => {
        sendError(req, res, { status: 504, code: 'upstream_timeout', message: `sandbox ${r.record.name} port ${r.port} did not answer within ${Math.round(opts.upstreamTimeoutMs / 1000)}s` });
        up.destroy();
      }, opts.upstreamTimeoutMs);
    });
    up.on('response', (ur) => {
      clearTimeout(timer);
      if (isHttp2(req)) {
        // HTTP/1.1 upstream, HTTP/2 client: its connection headers stay on its hop.
        ur.on('error', () => res.destroy());
        if (!writeHttp2Head(res as unknown as Http2ServerResponse, ur.statusCode, h2Headers(ur.headers))) return void ur.destroy();
        ur.pipe(res);
      } else relayResponse(ur, res);
    });
    up.on('error', (err) => {
      clearTimeout(timer);
      fail(req, res, err, r);
    });
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }

  /**
   * The head of an answer from the sandbox to an HTTP/2 client; false when it cannot be sent (a
   * status HTTP/2 cannot carry gets 502; a header Node refuses, or a stream gone, ends the stream).
   */
  function writeHttp2Head(res: Http2ServerResponse, status: number | undefined, headers: OutgoingHttpHeaders): boolean {
    if (res.stream.destroyed || res.stream.closed) return false;
    try {
      if (status === undefined || !(status >= 200 && status <= 599)) {
        sendError(res.req as unknown as IncomingMessage, res as unknown as ServerResponse, { status: 502, code: 'upstream_error', message: `the sandbox answered with status ${status}` });
        return false;
      }
      res.writeHead(status, headers as Record<string, string>);
      return true;
    } catch {
      res.stream.close(h2constants.NGHTTP2_INTERNAL_ERROR);
      return false;
    }
  }

  /** HTTP/2 on both sides (gRPC: trailers, streams both ways, resets carried across). */
  function proxyHttp2(req: Http2ServerRequest, res: Http2ServerResponse, r: Resolved, session: ClientHttp2Session): void {
    const asH1 = req as unknown as IncomingMessage;
    // The token goes as it does for HTTP/1.1 (stripToken): its header, a bearer that is it, the cookie.
    const raw: string[] = [];
    for (const [name, value] of Object.entries(req.headers)) {
      if (value === undefined || name.startsWith(':') || name === 'host') continue;
      for (const v of Array.isArray(value) ? value : [value]) raw.push(name, v);
    }
    const kept = stripToken(raw, r.token);
    const plain: IncomingHttpHeaders = {};
    for (let i = 0; i < kept.length; i += 2) plain[kept[i]!] = kept[i + 1];
    const headers = h2Headers(plain);
    const host = clientHost(asH1) ?? '';
    const client = clientAddress(asH1);
    const forwardedFor = req.headers['x-forwarded-for'];
    const internal = isInternal(asH1);
    Object.assign(headers, {
      ':method': req.method,
      ':path': r.path,
      ':scheme': 'http', // to the sandbox: h2c
      ':authority': r.record.maskHost ? maskHost(r.record.maskHost, r.port) : host,
      // Behind nginx the chain is complete already; on its own, the gateway appends the client.
      'x-forwarded-for': internal ? (forwardedFor ?? '') : forwardedFor ? `${forwardedFor}, ${client}` : client,
      'x-forwarded-host': host,
      'x-forwarded-proto': internal ? (req.headers['x-forwarded-proto'] ?? scheme) : scheme,
    });
    delete headers['x-sbx-gateway-error'];
    let up;
    try {
      up = session.request(headers);
    } catch (err) {
      return fail(asH1, res as unknown as ServerResponse, err, r);
    }
    let timer: NodeJS.Timeout | undefined;
    up.on('finish', () => {
      timer = setTimeout(() => {
        sendError(asH1, res as unknown as ServerResponse, { status: 504, code: 'upstream_timeout', message: `sandbox ${r.record.name} port ${r.port} did not answer within ${Math.round(opts.upstreamTimeoutMs / 1000)}s` });
        up.close(h2constants.NGHTTP2_CANCEL);
      }, opts.upstreamTimeoutMs);
    });
    up.on('response', (upHeaders) => {
      clearTimeout(timer);
      if (!writeHttp2Head(res, Number(upHeaders[':status']), h2Headers(upHeaders))) return void up.close(h2constants.NGHTTP2_CANCEL);
      up.pipe(res);
    });
    up.on('trailers', (trailers) => {
      try {
        res.addTrailers(h2Headers(trailers) as Record<string, string>);
      } catch {
        res.stream.close(h2constants.NGHTTP2_INTERNAL_ERROR);
      }
    });
    up.on('error', (err) => {
      clearTimeout(timer);
      if (res.headersSent) res.stream.close(h2constants.NGHTTP2_INTERNAL_ERROR);
      else fail(asH1, res as unknown as ServerResponse, err, r);
    });
    // A reset from the sandbox's side reaches the client as a reset (gRPC: its status), and back.
    up.on('close', () => {
      clearTimeout(timer);
      if (up.rstCode && up.rstCode !== h2constants.NGHTTP2_NO_ERROR && !res.stream.closed) res.stream.close(up.rstCode);
    });
    res.on('close', () => {
      if (!up.closed) up.close(res.stream.rstCode || h2constants.NGHTTP2_CANCEL);
    });
    req.pipe(up);
  }

  // The gateway's own host has nothing to serve: reload and health are on the control socket
  // (control.ts), out of reach of web pages (a page can send any Host, DNS rebinding included).
  function gatewayEndpoint(req: IncomingMessage, res: ServerResponse): void {
    sendError(req, res, { status: 404, code: 'no_sandbox_host', message: `use a sandbox URL such as http://<port>-<sandbox>.${opts.domain}/` });
  }

  /** WebSocket (and any other upgrade): route, check, then splice the two sockets. */
  async function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => {});
    const tunnel = TUNNEL_PATH.exec(req.url ?? '');
    const route = routeHost(clientHost(req), opts.domain);
    if (tunnel && route?.kind === 'gateway') return openTunnel(req, socket, head, tunnel[1]!, Number(tunnel[2]));
    const resolution = resolve(req);
    if ('gateway' in resolution) return sendUpgradeError(req, socket, { status: 404, code: 'no_sandbox_host', message: 'not a sandbox host' });
    if (!resolution.ok) {
      if ('redirect' in resolution) return sendUpgradeError(req, socket, { status: 403, code: 'token_in_query', message: 'send the token in a header or cookie for upgrades' });
      return sendUpgradeError(req, socket, resolution.error);
    }
    const r = resolution.value;
    let upstream: Socket;
    try {
      upstream = await opts.targets.connect(r.record, r.port);
    } catch (err) {
      const e = err instanceof GatewayFailure ? err.error : { status: 502, code: 'upstream_error', message: (err as Error).message };
      return sendUpgradeError(req, socket, e);
    }
    spliceUpgrade(socket, upstream, `${req.method} ${r.path} HTTP/1.1`, upstreamHeaders(req, r, true), head);
  }

  /** `sbx port forward`: raw bytes to any port of a sandbox, for the holder of its token. */
  async function openTunnel(req: IncomingMessage, socket: Duplex, head: Buffer, ref: string, port: number): Promise<void> {
    const record = opts.routes.find(ref);
    if (!record) return sendUpgradeError(req, socket, { status: 404, code: 'no_sandbox', message: `no sandbox named ${ref}` });
    const checked = checkToken(req, findToken(req), record, 'tunnels need the sandbox traffic token', !!opts.tls);
    if (!checked.ok) return sendUpgradeError(req, socket, checked.error);
    if (!(port >= 1 && port <= 65535)) return sendUpgradeError(req, socket, { status: 400, code: 'bad_port', message: `invalid port ${port}` });
    let upstream: Socket;
    try {
      upstream = await opts.targets.connect(record, port);
    } catch (err) {
      const e = err instanceof GatewayFailure ? err.error : { status: 502, code: 'upstream_error', message: (err as Error).message };
      return sendUpgradeError(req, socket, e);
    }
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: sbx-tunnel\r\nConnection: Upgrade\r\n\r\n');
    if (head.length) upstream.write(head);
    splice(socket, upstream);
  }

  const h2 = opts.h2 ?? new H2Upstreams((record, port) => opts.targets.connect(record, port));
  opts.targets.onStateChange((id) => h2.forget(id));
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    handle(req, res).catch((err) => sendError(req, res, { status: 500, code: 'gateway_error', message: (err as Error).message }));
  };
  const server = createServer({ keepAliveTimeout: 65_000 }, onRequest);
  // HTTP/2 with prior knowledge (h2c) on the same listener: gRPC clients and curl --http2-prior-knowledge.
  // At most 100 streams at once per connection: each may be a connection into a sandbox.
  const http2 = createHttp2Server({ settings: { maxConcurrentStreams: 100 } }, onRequest as unknown as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
  const sessions = new Set<import('node:http2').ServerHttp2Session>();
  http2.on('session', (session) => {
    sessions.add(session);
    if (session.socket?.remoteAddress === undefined) internalSessions.add(session);
    session.on('error', () => {});
    // As HTTP/1.1's keep-alive: an idle connection goes (a graceful close: streams under way end first).
    session.setTimeout(65_000, () => session.close());
    session.once('close', () => sessions.delete(session));
  });
  const sniffing = acceptHttp2PriorKnowledge(server, http2);
  // The gateway's stop ends every connection: HTTP/2 ones and those still being told apart too.
  const closeHttp1 = server.closeAllConnections.bind(server);
  server.closeAllConnections = () => {
    closeHttp1();
    for (const session of sessions) session.destroy();
    sniffing.destroyAll();
    h2.close();
  };
  server.on('upgrade', (req, socket, head) => {
    upgrade(req, socket, head).catch((err) => sendUpgradeError(req, socket, { status: 500, code: 'gateway_error', message: (err as Error).message }));
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  server.on('close', () => {
    for (const a of agents.values()) a.destroy();
    h2.close();
    http2.close();
  });
  return server;
}
