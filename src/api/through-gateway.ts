// Talking to a sandbox's ports through the gateway from this machine: one HTTP request
// (`sbx fetch`, Blaxel's sandbox.fetch) and a local TCP port forwarded to a sandbox port
// (`sbx port forward`, like kubectl port-forward), both with the sandbox's token.
import { readFileSync } from 'node:fs';
import { request as httpRequest, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { connect as connectHttp2, type IncomingHttpHeaders } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { connect as connectTcp, createServer, type Server, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';
import type { Duplex, Readable } from 'node:stream';
import { RuntimeError } from '../core/errors.ts';
import { parsePort } from '../core/ports.ts';
import { TOKEN_HEADER } from '../core/token.ts';
import { splice } from '../core/splice.ts';
import type { Sbx } from './sbx.ts';
import type { GatewayRoute } from './backend.ts';

/** TLS to an HTTPS gateway: the certificate checked for `host` against its CA (sbx's), or the system's. */
function tlsFor(gw: GatewayRoute, host: string, alpn: string[]) {
  const ca = gw.tls?.caPem ?? (gw.tls?.ca ? readFileSync(gw.tls.ca) : undefined);
  return { servername: host, ALPNProtocols: alpn, ...(ca ? { ca: [ca] } : {}) };
}

/**
 * A stream to the gateway's listener: TCP to it, or the daemon's tunnel (agent mode), inside TLS,
 * checked for `host`, when it serves HTTPS. A plain tunnel comes paused (see DaemonClient.tunnel):
 * the caller resumes it once it listens.
 */
export async function openGateway(gw: GatewayRoute, host: string, alpn: string[]): Promise<Duplex> {
  if (!gw.connect) return gw.tls ? connectTls({ host: gw.host, port: gw.port, ...tlsFor(gw, host, alpn) }) : connectTcp(gw.port, gw.host);
  const tunnel = await gw.connect();
  if (!gw.tls) return tunnel;
  try {
    const stream = connectTls({ socket: tunnel, ...tlsFor(gw, host, alpn) });
    tunnel.resume();
    return stream;
  } catch (err) {
    tunnel.destroy(); // a `docker exec` behind it, on a remote engine
    throw err;
  }
}

/** An HTTP/1.1 request to the gateway, over TLS when it serves HTTPS. */
function requestTo(gw: GatewayRoute, host: string, options: RequestOptions, onResponse?: (res: IncomingMessage) => void): ClientRequest {
  if (!gw.connect) return gw.tls ? httpsRequest({ host: gw.host, port: gw.port, ...tlsFor(gw, host, ['http/1.1']), ...options }, onResponse) : httpRequest({ host: gw.host, port: gw.port, ...options }, onResponse);
  const createConnection = (_o: unknown, done: (err: Error | null, s: Duplex) => void) =>
    void openGateway(gw, host, ['http/1.1']).then(
      (s) => {
        done(null, s);
        s.resume();
      },
      (err: Error) => done(err, undefined as never),
    );
  return httpRequest({ createConnection, ...options } as RequestOptions, onResponse);
}

export interface FetchOptions {
  path?: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer | Readable;
  /** HTTP/2: with prior knowledge (h2c), or by ALPN on an HTTPS gateway. */
  http2?: boolean;
}

export interface FetchResponse {
  status: number;
  statusText: string;
  rawHeaders: string[];
  body: Readable;
  /** "1.1" or "2". */
  httpVersion: string;
}

export async function fetchThroughGateway(sbx: Sbx, ref: string, portValue: number | string, options: FetchOptions = {}): Promise<FetchResponse> {
  const port = parsePort(portValue);
  const record = await sbx.resolve(ref);
  const gw = await sbx.ensureGateway();
  let path = options.path ?? '/';
  if (!path.startsWith('/')) path = `/${path}`;
  const host = `${port}-${record.name}.${gw.domain}`;
  if (options.http2) return fetchHttp2(gw, host, path, options, record.token ?? '');
  return new Promise((resolve, reject) => {
    const req = requestTo(
      gw,
      host,
      {
        method: options.method ?? 'GET',
        path,
        headers: { ...options.headers, host: `${host}:${gw.port}`, [TOKEN_HEADER]: record.token ?? '' },
      },
      (res) => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', rawHeaders: res.rawHeaders, body: res, httpVersion: res.httpVersion }),
    );
    req.on('error', (err) => reject(new RuntimeError(`the gateway did not answer: ${err.message}`)));
    sendBody(req, options.body);
  });
}

function sendBody(req: NodeJS.WritableStream & { end(b?: string | Buffer): unknown }, body: FetchOptions['body']): void {
  if (body === undefined) req.end();
  else if (typeof body === 'string' || Buffer.isBuffer(body)) req.end(body);
  else body.pipe(req);
}

/** The same request as HTTP/2 (sbx fetch --http2): one session, closed with the response. */
function fetchHttp2(gw: GatewayRoute, host: string, path: string, options: FetchOptions, token: string): Promise<FetchResponse> {
  return new Promise((resolve, reject) => {
    const hint = gw.tls ? '' : ' (without TLS, HTTP/2 needs the Node engine, nginx 1.25.1 or later, or HAProxy in front of an older nginx: gateway status --json says "h2c")';
    const failed = (err: Error) => reject(new RuntimeError(`the gateway did not answer over HTTP/2: ${err.message}${hint}`));
    openGateway(gw, host, ['h2']).then((s) => {
      s.resume();
      const session = connectHttp2(`${gw.tls ? 'https' : 'http'}://${host}:${gw.port}`, { createConnection: () => s });
      session.on('error', failed);
      const headers: Record<string, string> = { ':method': options.method ?? 'GET', ':path': path, ':authority': `${host}:${gw.port}`, [TOKEN_HEADER]: token };
      for (const [k, v] of Object.entries(options.headers ?? {})) if (k.toLowerCase() !== 'host') headers[k.toLowerCase()] = v;
      const stream = session.request(headers);
      stream.on('error', failed);
      stream.on('response', (h: IncomingHttpHeaders) => {
        const raw: string[] = [];
        for (const [k, v] of Object.entries(h)) if (!k.startsWith(':') && v !== undefined) for (const one of Array.isArray(v) ? v : [v]) raw.push(k, String(one));
        resolve({ status: Number(h[':status']), statusText: '', rawHeaders: raw, body: stream, httpVersion: '2' });
      });
      stream.on('close', () => session.close());
      sendBody(stream, options.body);
    }, failed);
  });
}

export interface ForwardOptions {
  /** Local address to listen on (default 127.0.0.1). */
  host?: string;
  /** Local port (default: the sandbox port; 0 picks a free one). */
  localPort?: number;
  onError?: (message: string) => void;
}

/** Listens locally and carries every connection, byte for byte, to a port of the sandbox. */
export async function forwardPort(sbx: Sbx, ref: string, portValue: number | string, options: ForwardOptions = {}): Promise<Server> {
  const port = parsePort(portValue);
  const record = await sbx.resolve(ref);
  const gw = await sbx.ensureGateway();
  const server = createServer((client: Socket) => {
    client.pause();
    // The token is read per connection: a rotated one is used from the next connection on.
    void sbx.resolve(record.id).then((current) => tunnel(client, current.token ?? ''), () => tunnel(client, record.token ?? ''));
  });
  const tunnel = (client: Socket, token: string) => {
    const req = requestTo(gw, gw.domain, {
      path: `/_sbx/tunnel/${record.id}/${port}`,
      headers: { host: gw.domain, connection: 'Upgrade', upgrade: 'sbx-tunnel', [TOKEN_HEADER]: token },
    });
    req.on('upgrade', (_res, tunnel, head) => {
      // Bytes the sandbox sent right after the switch belong to the local client.
      if (head.length) client.write(head);
      splice(client, tunnel);
      client.resume();
    });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => options.onError?.(text.trim() || `gateway answered ${res.statusCode}`));
      client.destroy();
    });
    req.on('error', (err) => {
      options.onError?.(`the gateway did not answer: ${err.message}`);
      client.destroy();
    });
    req.end();
  };
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new RuntimeError(err.code === 'EADDRINUSE' ? `local port ${options.localPort ?? port} is in use: pick another with --local` : `cannot listen locally: ${err.message}`)),
    );
    server.listen(options.localPort ?? port, options.host ?? '127.0.0.1', () => resolve());
  });
  return server;
}
