// The egress proxy: outbound TCP 80 and 443 of sandboxes whose policy names domains arrive here
// (redirected by the kernel). HTTP is decided request by request on its Host header, TLS on the
// ClientHello's SNI (passed through, never decrypted). The proxy resolves the name itself through
// sbx's upstream and connects only to an address the policy allows for that name, so neither a
// false /etc/hosts entry nor another name on an allowed address gets through. A client that
// names nothing (TLS without SNI, a bare IP) is judged by its real destination, and an address
// that a denied name resolves to stays denied. Refusals reset the connection: clients fail fast.
import { createServer as createHttpServer, request, Agent, type IncomingMessage, type ServerResponse, type Server as HttpServer } from 'node:http';
import { connect, createServer, isIP, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connectionAllowed, deniedNames, explicitlyAllowed, normalizeName, type CompiledPolicy } from '../core/network-policy.ts';
import { originalDestination } from '../net/conntrack.ts';
import { relayResponse, spliceUpgrade, withoutHopByHop } from './http-relay.ts';
import { parseClientHello } from './sni.ts';
import { splice } from './splice.ts';
import type { UpstreamResolver } from './upstream.ts';

const HELLO_LIMIT = 64 * 1024;
const HELLO_TIMEOUT_MS = 10_000;

export interface EgressProxyOptions {
  sandboxOf(address: string): Promise<string | undefined>;
  policyOf(id: string): CompiledPolicy | undefined;
  resolver: UpstreamResolver;
  log?: (line: string) => void;
}

/** A connection the proxy carries, re-judged whenever a policy changes. */
interface Carried {
  id: string;
  name?: string;
  address: string;
  port: number;
  client: Socket;
  upstream?: Duplex;
}

function reset(socket: Socket | Duplex): void {
  const s = socket as Socket;
  if (typeof s.resetAndDestroy === 'function' && !s.destroyed) s.resetAndDestroy();
  else socket.destroy();
}

/** "Host: name:port" or "[v6]:port" to a name or address. */
function hostOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const v6 = /^\[([^\]]+)\]/.exec(header);
  if (v6) return v6[1];
  return normalizeName(header.replace(/:\d+$/, '')) || undefined;
}

export class EgressProxy {
  readonly #o: EgressProxyOptions;
  readonly #carried = new Set<Carried>();
  /** One upstream connection per client connection, as if the client had connected itself. */
  readonly #agents = new WeakMap<Socket, Agent>();
  readonly #denied = new WeakMap<CompiledPolicy, { at: number; addresses: Promise<Set<string>> }>();
  #http?: HttpServer;
  #tls?: Server;

  constructor(options: EgressProxyOptions) {
    this.#o = options;
  }

  async listen(): Promise<{ http: number; tls: number }> {
    const http = createHttpServer({ requestTimeout: 0 }, (req, res) => void this.#request(req, res));
    http.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => void this.#upgrade(req, socket, head));
    http.on('connect', (_req, socket: Socket) => reset(socket));
    http.on('clientError', (_err, socket) => reset(socket as Socket));
    const tls = createServer((socket) => void this.#tlsConnection(socket));
    const port = (server: Server | HttpServer) =>
      new Promise<number>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '0.0.0.0', () => resolve((server.address() as { port: number }).port));
      });
    this.#http = http;
    this.#tls = tls;
    return { http: await port(http), tls: await port(tls) };
  }

  close(): void {
    for (const c of this.#carried) reset(c.client);
    this.#http?.close();
    this.#tls?.close();
  }

  /** After a policy change: connections the new policy denies are cut at once. */
  recheck(): void {
    for (const c of this.#carried) {
      const policy = this.#o.policyOf(c.id);
      const still = policy && connectionAllowed(policy, { name: c.name, address: c.address, port: c.port });
      if (!still) {
        this.#o.log?.(`egress: cut ${c.name ?? c.address}:${c.port} of sandbox ${c.id} (policy changed)`);
        reset(c.client);
        c.upstream?.destroy();
      }
    }
  }

  #carry(c: Carried): void {
    this.#carried.add(c);
    c.client.once('close', () => this.#carried.delete(c));
  }

  /** Addresses of the exact names a policy denies (resolved upstream, refreshed each minute). */
  #deniedAddresses(policy: CompiledPolicy): Promise<Set<string>> {
    const hit = this.#denied.get(policy);
    if (hit && Date.now() - hit.at < 60_000) return hit.addresses;
    const addresses = Promise.all(deniedNames(policy).map((n) => this.#o.resolver.addresses(n))).then((lists) => new Set(lists.flat()));
    this.#denied.set(policy, { at: Date.now(), addresses });
    return addresses;
  }

  /**
   * Where a connection may go: the first address of `name` (resolved by sbx) that the policy
   * allows, or the given address when no name was given. Undefined: refuse.
   */
  async #target(policy: CompiledPolicy, name: string | undefined, address: string | undefined, port: number): Promise<string | undefined> {
    if (name && !isIP(name)) {
      for (const a of await this.#o.resolver.addresses(name)) {
        if (connectionAllowed(policy, { name, address: a, port })) return a;
      }
      return undefined;
    }
    const dest = name ?? address;
    if (!dest || !connectionAllowed(policy, { address: dest, port })) return undefined;
    // By address alone, a denied name's address is still denied (unless allowed outright).
    if (policy.mode === 'allow-all' && !explicitlyAllowed(policy, { address: dest, port }) && (await this.#deniedAddresses(policy)).has(dest)) return undefined;
    return dest;
  }

  async #sandbox(socket: Socket): Promise<{ id: string; policy: CompiledPolicy } | undefined> {
    const id = await this.#o.sandboxOf((socket.remoteAddress ?? '').replace(/^::ffff:/, ''));
    const policy = id ? this.#o.policyOf(id) : undefined;
    return id && policy ? { id, policy } : undefined;
  }

  async #destination(socket: Socket): Promise<string | undefined> {
    const client = (socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    return (await originalDestination(client, socket.remotePort ?? 0, socket.localPort ?? 0))?.address;
  }

  // ---- HTTP (port 80) -------------------------------------------------------------------

  async #decideHttp(req: IncomingMessage): Promise<{ id: string; name?: string; address: string } | undefined> {
    const socket = req.socket;
    const who = await this.#sandbox(socket);
    if (!who) return undefined;
    const name = hostOf(req.headers.host);
    const address = await this.#target(who.policy, name, name ? undefined : await this.#destination(socket), 80);
    if (!address) this.#o.log?.(`egress: refused http ${name ?? '(no host)'} for sandbox ${who.id}`);
    return address ? { id: who.id, name: name && !isIP(name) ? name : undefined, address } : undefined;
  }

  async #request(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const decided = await this.#decideHttp(req).catch(() => undefined);
    if (!decided) return reset(req.socket);
    const headers = withoutHopByHop(req.rawHeaders);
    const up = request({ host: decided.address, port: 80, method: req.method, path: req.url, headers: headers as unknown as Record<string, string>, setHost: false, agent: this.#agentFor(req.socket) });
    const carried: Carried = { id: decided.id, name: decided.name, address: decided.address, port: 80, client: req.socket, upstream: up as unknown as Duplex };
    this.#carry(carried);
    up.on('response', (ur) => relayResponse(ur, res));
    up.on('error', () => reset(req.socket));
    res.on('close', () => {
      this.#carried.delete(carried);
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
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

  async #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    socket.on('error', () => {});
    const decided = await this.#decideHttp(req).catch(() => undefined);
    if (!decided) return reset(socket);
    const upstream = connect(80, decided.address);
    this.#carry({ id: decided.id, name: decided.name, address: decided.address, port: 80, client: socket, upstream });
    spliceUpgrade(socket, upstream, `${req.method} ${req.url} HTTP/${req.httpVersion}`, req.rawHeaders, head);
  }

  // ---- TLS (port 443) -------------------------------------------------------------------

  async #tlsConnection(socket: Socket): Promise<void> {
    socket.on('error', () => {});
    const who = await this.#sandbox(socket).catch(() => undefined);
    if (!who) return reset(socket);
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
    const name = hello.serverName ? normalizeName(hello.serverName) : undefined;
    const address = await this.#target(who.policy, name, name ? undefined : await this.#destination(socket), 443).catch(() => undefined);
    if (!address) {
      this.#o.log?.(`egress: refused tls ${name ?? '(no sni)'} for sandbox ${who.id}`);
      return reset(socket);
    }
    const upstream = connect(443, address);
    upstream.write(buffered);
    this.#carry({ id: who.id, name, address, port: 443, client: socket, upstream });
    splice(socket, upstream);
    socket.resume();
  }
}
