// The egress proxy: outbound TCP 80 and 443 of sandboxes whose policy names domains arrive here
// (redirected by the kernel, IPv4 and IPv6). HTTP is decided request by request on its Host
// header, TLS on the ClientHello's SNI (passed through, never decrypted). The proxy resolves the
// name itself through sbx's upstream and connects only to an address the policy allows for that
// name, so neither a false /etc/hosts entry nor another name on an allowed address gets through.
// A client that names nothing (TLS without SNI, HTTP/1.0 without Host) is judged by its real
// destination, and an address that a denied name resolves to stays denied.
//
// The proxy connects from the host, past the kernel's rules for the sandbox's bridge, so it
// guards what those rules guard: the host's own addresses (only `host` entries open them;
// loopback only an address entry), protected ranges (only address entries), and other sandboxes
// (never), whether named by address or reached through a name that resolves there.
//
// One request, one decision: a request whose target or Host headers could mean two hosts is
// refused; an Upgrade request goes upstream alone, and the two connections join only once the
// upstream answered 101, so bytes pipelined behind it never reach the upstream as a request.
// A refused HTTP request gets a 403 whose one-line body says why; a refused TLS connection a reset.
import { createServer as createHttpServer, request, Agent, STATUS_CODES, type IncomingMessage, type ServerResponse, type Server as HttpServer } from 'node:http';
import { connect, createServer, isIP, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connectionAllowed, deniedNames, type CompiledPolicy } from '../core/network-policy.ts';
import { originalDestination } from '../net/conntrack.ts';
import { checkRequest, parseHost, judgeAddress, judgeName, judgeNameAlone, preferFamily, refusalResponse, RULE, type Candidate, type HostTarget, type Verdict } from './egress-judge.ts';
import type { NetworkLogEntry } from '../core/network-log.ts';
import { canonicalAddress } from './host-addresses.ts';
import { relayResponse, withoutHopByHop } from './http-relay.ts';
import { parseClientHello } from './sni.ts';
import { splice } from '../core/splice.ts';
import { bindLowPort } from './low-ports.ts';
import type { UpstreamResolver } from './upstream.ts';

const HELLO_LIMIT = 64 * 1024;
const HELLO_TIMEOUT_MS = 10_000;
/** How long a refused client has to read its answer before the connection is dropped. */
const LINGER_MS = 5000;

export interface EgressProxyOptions {
  sandboxOf(address: string): Promise<string | undefined>;
  policyOf(id: string): CompiledPolicy | undefined;
  resolver: Pick<UpstreamResolver, 'addresses'>;
  /** Whether an address is one of the host's own (loopback and unspecified included). */
  isHost(address: string): boolean;
  /** Whether an address is in a sandbox's subnet. */
  isSandbox(address: string): Promise<boolean>;
  log?: (line: string) => void;
  /**
   * Where a redirected connection was really going (conntrack, root-only: the egress worker asks
   * the gateway). Defaults to reading conntrack here.
   */
  destination?(client: string, clientPort: number, localPort: number): Promise<{ address: string } | undefined>;
  /** Tests only: where a judged upstream address and port are really dialled. */
  dial?: (address: string, port: number) => { host: string; port: number };
  /** Each decision (an HTTP request, a TLS connection) for the sandbox's network log: made into an entry only if the log keeps it (its rate limit). */
  record?: (id: string, entry: () => Omit<NetworkLogEntry, 'time' | 'source'>) => void;
}

/** A connection the proxy carries, re-judged whenever a policy changes. */
interface Carried {
  id: string;
  name?: string;
  address: string;
  port: number;
  toHost: boolean;
  client: Socket;
  upstream?: Duplex;
  /** HTTP: the client connection's upstream connections, kept alive between its requests. */
  agent?: Agent;
}

interface Client {
  id: string;
  policy: CompiledPolicy;
  /** The family the client connected over: the upstream is dialled in it first. */
  family: 4 | 6;
}

function reset(socket: Socket | Duplex): void {
  const s = socket as Socket;
  if (typeof s.resetAndDestroy === 'function' && !s.destroyed) s.resetAndDestroy();
  else socket.destroy();
}

/** The client's address as the rest of sbx spells it (IPv4-mapped as IPv4). */
function clientAddress(socket: Socket): { address: string; family: 4 | 6 } {
  const raw = socket.remoteAddress ?? '';
  const address = raw.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
  return { address, family: isIP(address) === 6 ? 6 : 4 };
}

/** Writes a raw HTTP/1.1 response head (the client's socket is no longer the HTTP server's). */
function rawHead(status: number, message: string | undefined, rawHeaders: readonly string[]): string {
  let text = `HTTP/1.1 ${status} ${message || STATUS_CODES[status] || ''}\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) text += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  return `${text}\r\n`;
}

/** A refusal on a raw client socket; whatever the client sends meanwhile is read and dropped. */
function refuseRaw(socket: Socket, status: 403 | 502, reason: string): void {
  const { head, body } = refusalResponse(status, reason);
  socket.resume();
  socket.end(rawHead(status, undefined, Object.entries(head).flat()) + body);
  socket.setTimeout(LINGER_MS, () => socket.destroy());
}

/** The verdict whole on both sides: its rule stays unnamed until the network log keeps the entry. */
type HttpDecision = { ok: true; verdict: Extract<Verdict, { ok: true }>; name?: string; path: string } | { ok: false; verdict: Extract<Verdict, { ok: false }>; target: HostTarget };

const hasBody = (req: IncomingMessage) => req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');

export class EgressProxy {
  readonly #o: EgressProxyOptions;
  readonly #carried = new Set<Carried>();
  /**
   * HTTP: one record per client connection for as long as it is open, naming what its last
   * request was judged to reach: between requests it is still open (kept alive, upstream too), so
   * a policy that now denies that is cut at once, not only at its next request.
   */
  readonly #keptAlive = new WeakMap<Socket, Carried>();
  /** One upstream connection per client connection (and address), as if the client had connected itself. */
  readonly #agents = new WeakMap<Socket, Agent>();
  readonly #denied = new WeakMap<CompiledPolicy, { at: number; addresses: Promise<Set<string>> }>();
  /**
   * Requests on one client connection are served one after the other, each once the one before
   * it is answered (Node hands over pipelined requests at once): after a refusal nothing more
   * goes upstream, and an Upgrade never writes its answer into another response.
   */
  readonly #turns = new WeakMap<Socket, Promise<boolean>>();
  #http?: HttpServer;
  #tls?: Server;

  constructor(options: EgressProxyOptions) {
    this.#o = options;
  }

  /** Listens on every address, IPv4 and IPv6 (dual-stack; IPv4 alone when the host has no IPv6). */
  /** `privileged`: on ports below 1024 (the process is root until it drops; see low-ports.ts). */
  async listen(privileged = false, prefer: { http?: number; tls?: number } = {}): Promise<{ http: number; tls: number }> {
    const http = createHttpServer(
      {
        requestTimeout: 0,
        // An Upgrade request with a body cannot be held back whole until the 101: it is relayed
        // as an ordinary request instead (without its Upgrade). Node < 24.9 ignores this option.
        shouldUpgradeCallback: (req: IncomingMessage) => !hasBody(req),
      } as Parameters<typeof createHttpServer>[0],
      (req, res) => this.#request(req, res),
    );
    http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#upgrade(req, socket, head));
    http.on('connect', (_req, socket: Socket) => {
      socket.on('error', () => {});
      refuseRaw(socket, 403, "sbx: CONNECT is not served by sbx's egress proxy");
    });
    http.on('clientError', (_err, socket) => reset(socket as Socket));
    const tls = createServer((socket) => void this.#tlsConnection(socket));
    const port = (server: Server | HttpServer, wanted?: number) => bindLowPort((p) => listenOn(server, p), privileged, wanted);
    const listenOn = async (server: Server | HttpServer, wanted: number) => {
      for (const host of ['::', '0.0.0.0']) {
        try {
          return await new Promise<number>((resolve, reject) => {
            server.once('error', reject);
            server.listen({ port: wanted, host, ipv6Only: false }, () => {
              server.off('error', reject);
              resolve((server.address() as { port: number }).port);
            });
          });
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (host !== '::' || (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL')) throw err;
        }
      }
      throw new Error('unreachable');
    };
    this.#http = http;
    this.#tls = tls;
    return { http: await port(http, prefer.http), tls: await port(tls, prefer.tls) };
  }

  close(): void {
    for (const c of this.#carried) reset(c.client);
    this.#http?.close();
    this.#tls?.close();
  }

  /** After a policy change: connections the new policy denies are cut at once (returns how many). */
  recheck(): number {
    let cut = 0;
    for (const c of this.#carried) {
      const policy = this.#o.policyOf(c.id);
      const still = policy && connectionAllowed(policy, { name: c.name, address: c.address, port: c.port, toHost: c.toHost });
      if (!still) {
        this.#o.log?.(`egress: cut ${c.name ?? c.address}:${c.port} of sandbox ${c.id} (policy changed)`);
        reset(c.client);
        c.upstream?.destroy();
        c.agent?.destroy();
        cut++;
      }
    }
    return cut;
  }

  #carry(c: Carried): Carried {
    this.#carried.add(c);
    c.client.once('close', () => this.#carried.delete(c));
    return c;
  }

  /** Addresses of the exact names a policy denies (resolved upstream, refreshed each minute). */
  #deniedAddresses(policy: CompiledPolicy): Promise<Set<string>> {
    const hit = this.#denied.get(policy);
    if (hit && Date.now() - hit.at < 60_000) return hit.addresses;
    const addresses = Promise.all(deniedNames(policy).map((n) => this.#o.resolver.addresses(n))).then(
      (lists) => new Set(lists.flat().map((a) => canonicalAddress(a) ?? a)),
    );
    this.#denied.set(policy, { at: Date.now(), addresses });
    return addresses;
  }

  async #classify(address: string): Promise<Candidate> {
    const a = canonicalAddress(address) ?? address;
    const host = this.#o.isHost(a);
    return { address: a, host, sandbox: !host && (await this.#o.isSandbox(a)) };
  }

  /** Where a connection of `client` to `target` on `port` may go (a name is resolved by sbx, never trusted). */
  async #decide(client: Client, target: HostTarget, port: number, destination: () => Promise<string | undefined>): Promise<Verdict> {
    const { policy } = client;
    if (target.name) {
      const early = judgeNameAlone(policy, target.name, port);
      if (early) return early;
      const addresses = await this.#o.resolver.addresses(target.name);
      const candidates = await Promise.all(addresses.map((a) => this.#classify(a)));
      return judgeName(policy, target.name, port, preferFamily(candidates, client.family));
    }
    const address = target.address ?? (await destination());
    if (!address) return { ok: false, status: 403, reason: 'sbx: the connection names no host and its destination is unknown', rule: RULE.unknown };
    const denied = policy.mode === 'allow-all' && deniedNames(policy).length > 0 ? await this.#deniedAddresses(policy) : undefined;
    return judgeAddress(policy, await this.#classify(address), port, denied);
  }

  async #client(socket: Socket): Promise<Client | undefined> {
    const { address, family } = clientAddress(socket);
    const id = await this.#o.sandboxOf(address);
    const policy = id ? this.#o.policyOf(id) : undefined;
    return id && policy ? { id, policy, family } : undefined;
  }

  async #destination(socket: Socket): Promise<string | undefined> {
    const find = this.#o.destination ?? originalDestination;
    return (await find(clientAddress(socket).address, socket.remotePort ?? 0, socket.localPort ?? 0))?.address;
  }

  #dial(address: string, port: number): { host: string; port: number } {
    return this.#o.dial?.(address, port) ?? { host: address, port };
  }

  #refused(client: Client, what: string, reason: string): void {
    this.#o.log?.(`egress: refused ${what} for sandbox ${client.id}: ${reason.replace(/^sbx: /, '')}`);
  }

  /** One decision into the sandbox's network log: the name judged, and the address it went to. */
  #record(client: Client, port: number, target: { name?: string; address?: string }, verdict: { ok: boolean; rule: string; address?: string }): void {
    const address = verdict.address ?? target.address;
    this.#o.record?.(client.id, () => ({ protocol: 'tcp', ...(address ? { address } : {}), port, ...(target.name ? { name: target.name } : {}), verdict: verdict.ok ? 'allowed' : 'blocked', rule: verdict.rule }));
  }

  /** The decision for one HTTP request (Host and target checked first), or why it is refused. */
  async #decideHttp(client: Client, req: IncomingMessage): Promise<HttpDecision> {
    const check = checkRequest(req.url ?? '', req.rawHeaders);
    if (!check.ok) return { ok: false, verdict: { ok: false, status: 403, reason: check.reason, rule: RULE.badRequest }, target: {} };
    const verdict = await this.#decide(client, check.target, 80, () => this.#destination(req.socket)).catch(
      (err: Error): Verdict => ({ ok: false, status: 502, reason: `sbx: ${err.message}`, rule: RULE.unresolved }),
    );
    if (!verdict.ok) return { ok: false, verdict, target: check.target };
    return { ok: true, verdict, name: check.target.name, path: check.path };
  }

  // ---- HTTP (port 80) -------------------------------------------------------------------

  /** Runs `work` once every earlier request of the connection is answered; false: the connection ends. */
  #inTurn(socket: Socket, work: () => Promise<boolean>): void {
    const before = this.#turns.get(socket) ?? Promise.resolve(true);
    this.#turns.set(socket, before.then((go) => (go ? work() : false)).catch(() => false));
  }

  #request(req: IncomingMessage, res: ServerResponse): void {
    req.socket.on('error', () => {});
    this.#inTurn(req.socket, () => this.#serve(req, res));
  }

  /** Serves one request; resolves when its response is done (true: the connection may go on). */
  async #serve(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const client = await this.#client(req.socket).catch(() => undefined);
    if (!client) {
      reset(req.socket);
      return false;
    }
    const d = await this.#decideHttp(client, req);
    this.#record(client, 80, d.ok ? { name: d.name } : d.target, d.verdict);
    if (!d.ok) {
      const { status, reason } = d.verdict;
      this.#refused(client, `http ${req.headers.host ?? '(no host)'}`, reason);
      const { head, body } = refusalResponse(status, reason);
      res.writeHead(status, head);
      res.end(body);
      return false;
    }
    const headers = withoutHopByHop(req.rawHeaders);
    // A body the client framed in chunks goes on framed in chunks: Node would otherwise send a
    // GET's body unframed, and the upstream would read it as the next request.
    if (req.headers['transfer-encoding'] !== undefined) headers.push('Transfer-Encoding', 'chunked');
    const to = this.#dial(d.verdict.address, 80);
    const agent = this.#agentFor(req.socket);
    const up = request({ host: to.host, port: to.port, method: req.method, path: d.path, headers: headers as unknown as Record<string, string>, setHost: false, agent });
    const judged = { id: client.id, name: d.name, address: d.verdict.address, port: 80, toHost: d.verdict.toHost, upstream: up as unknown as Duplex, agent };
    let carried = this.#keptAlive.get(req.socket);
    if (carried) Object.assign(carried, judged);
    else this.#keptAlive.set(req.socket, (carried = this.#carry({ ...judged, client: req.socket })));
    const kept = carried;
    up.on('response', (ur) => relayResponse(ur, res));
    up.on('error', () => reset(req.socket));
    req.pipe(up);
    return new Promise<boolean>((resolve) =>
      res.on('close', () => {
        if (kept.upstream === (up as unknown as Duplex)) kept.upstream = undefined;
        if (!res.writableFinished) up.destroy();
        resolve(res.writableFinished);
      }),
    );
  }

  #agentFor(client: Socket): Agent {
    let agent = this.#agents.get(client);
    if (!agent) {
      const made = new Agent({ keepAlive: true, maxSockets: 1 });
      client.once('close', () => made.destroy());
      this.#agents.set(client, (agent = made));
    }
    return agent;
  }

  /**
   * An Upgrade request: sent upstream on a connection of its own; only a 101 joins the two
   * connections (then the bytes the client sent after its request go on, as the new protocol's).
   * Any other answer is relayed and the client's connection closes: nothing it pipelined behind
   * the request reaches the upstream.
   */
  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => {});
    this.#inTurn(socket, async () => {
      await this.#serveUpgrade(req, socket, head);
      return false; // the connection is the upgrade's now (or closed)
    });
  }

  async #serveUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const client = await this.#client(socket).catch(() => undefined);
    if (!client) return reset(socket);
    const d: HttpDecision = hasBody(req)
      ? { ok: false, verdict: { ok: false, status: 403, reason: 'sbx: an Upgrade request with a body is not served', rule: RULE.badRequest }, target: {} }
      : await this.#decideHttp(client, req);
    this.#record(client, 80, d.ok ? { name: d.name } : d.target, d.verdict);
    if (!d.ok) {
      this.#refused(client, `http upgrade ${req.headers.host ?? '(no host)'}`, d.verdict.reason);
      return refuseRaw(socket, d.verdict.status, d.verdict.reason);
    }
    const headers = [...withoutHopByHop(req.rawHeaders), 'Connection', 'Upgrade', 'Upgrade', String(req.headers.upgrade ?? '')];
    const to = this.#dial(d.verdict.address, 80);
    const up = request({ host: to.host, port: to.port, method: req.method, path: d.path, headers: headers as unknown as Record<string, string>, setHost: false, agent: false });
    const carried = this.#carry({ id: client.id, name: d.name, address: d.verdict.address, port: 80, toHost: d.verdict.toHost, client: socket, upstream: up as unknown as Duplex });
    socket.once('close', () => up.destroy());
    up.on('upgrade', (ures: IncomingMessage, upstream: Socket, upstreamHead: Buffer) => {
      upstream.on('error', () => {});
      carried.upstream = upstream;
      if (socket.destroyed) return upstream.destroy();
      socket.write(rawHead(101, ures.statusMessage, ures.rawHeaders));
      if (upstreamHead.length) socket.write(upstreamHead);
      if (head.length) upstream.write(head);
      splice(socket, upstream);
    });
    up.on('response', (ures: IncomingMessage) => {
      socket.resume(); // what the client sent after its request is read and dropped
      socket.write(rawHead(ures.statusCode ?? 502, ures.statusMessage, [...withoutHopByHop(ures.rawHeaders), 'Connection', 'close']));
      ures.pipe(socket);
      ures.on('error', () => socket.destroy());
      ures.on('end', () => socket.setTimeout(LINGER_MS, () => socket.destroy()));
    });
    up.on('error', () => reset(socket));
    up.end();
  }

  // ---- TLS (port 443) -------------------------------------------------------------------

  async #tlsConnection(socket: Socket): Promise<void> {
    socket.on('error', () => {});
    const client = await this.#client(socket).catch(() => undefined);
    if (!client) return reset(socket);
    let buffered = Buffer.alloc(0);
    const hello = await new Promise<{ serverName?: string } | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), HELLO_TIMEOUT_MS);
      const onData = (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        const r = parseClientHello(buffered);
        if (r.state === 'more' && buffered.length < HELLO_LIMIT) return;
        clearTimeout(timer);
        socket.off('data', onData);
        socket.pause();
        resolve(r.state === 'done' ? { serverName: r.serverName } : undefined);
      };
      socket.on('data', onData);
      socket.once('close', () => resolve(undefined));
    });
    if (!hello || socket.destroyed) return reset(socket);
    // An SNI that is an address literal (not allowed by TLS, but possible) is judged as that address.
    const sni = hello.serverName;
    // The SNI must be a host name: anything else (a NUL byte, a port, spaces) is refused, since the
    // resolver would read a different name than the one judged ("denied.test\0.wild.test").
    const parsed = sni === undefined ? {} : isIP(sni) ? { address: canonicalAddress(sni) ?? sni } : parseHost(sni);
    if (!parsed || parsed.port !== undefined) {
      this.#refused(client, 'tls (a server name that is not a host name)', 'sbx: the TLS server name is not a host name');
      this.#record(client, 443, {}, { ok: false, rule: RULE.badRequest });
      return reset(socket);
    }
    const target: HostTarget = parsed;
    const verdict = await this.#decide(client, target, 443, () => this.#destination(socket)).catch(
      (err: Error): Verdict => ({ ok: false, status: 502, reason: `sbx: ${err.message}`, rule: RULE.unresolved }),
    );
    this.#record(client, 443, target, verdict);
    if (!verdict.ok) {
      this.#refused(client, `tls ${sni ?? '(no sni)'}`, verdict.reason);
      return reset(socket);
    }
    const to = this.#dial(verdict.address, 443);
    const upstream = connect(to.port, to.host);
    upstream.write(buffered);
    this.#carry({ id: client.id, name: target.name, address: verdict.address, port: 443, toHost: verdict.toHost, client: socket, upstream });
    splice(socket, upstream);
    socket.resume();
  }
}
