// Talking to a sandbox's ports through the gateway from this machine: one HTTP request
// (`sbx fetch`, Blaxel's sandbox.fetch) and a local TCP port forwarded to a sandbox port
// (`sbx port forward`, like kubectl port-forward), both with the sandbox's token.
import { request, type IncomingMessage, type RequestOptions } from 'node:http';
import { createServer, type Server, type Socket } from 'node:net';
import type { Duplex, Readable } from 'node:stream';
import { RuntimeError } from '../core/errors.ts';
import { parsePort } from '../core/ports.ts';
import { TOKEN_HEADER } from '../core/token.ts';
import { splice } from '../core/splice.ts';
import type { Sbx } from './sbx.ts';
import type { GatewayRoute } from './backend.ts';

/** Options for a request to the gateway: over TCP, or through the daemon's tunnel (agent mode). */
function via(gw: GatewayRoute): RequestOptions {
  return gw.connect
    ? { createConnection: (_o: unknown, done: (err: Error | null, s: Duplex) => void) => void gw.connect!().then(
        (s) => {
          done(null, s);
          s.resume(); // the tunnel hands its stream over paused (see DaemonClient.tunnel)
        },
        (err: Error) => done(err, undefined as never),
      ) } as RequestOptions
    : { host: gw.host, port: gw.port };
}

export interface FetchOptions {
  path?: string;
  method?: string;
  headers?: Record<string, string>;
  body?: string | Buffer | Readable;
}

export interface FetchResponse {
  status: number;
  statusText: string;
  rawHeaders: string[];
  body: IncomingMessage;
}

export async function fetchThroughGateway(sbx: Sbx, ref: string, portValue: number | string, options: FetchOptions = {}): Promise<FetchResponse> {
  const port = parsePort(portValue);
  const record = await sbx.resolve(ref);
  const gw = await sbx.ensureGateway();
  let path = options.path ?? '/';
  if (!path.startsWith('/')) path = `/${path}`;
  return new Promise((resolve, reject) => {
    const req = request(
      {
        ...via(gw),
        method: options.method ?? 'GET',
        path,
        headers: { ...options.headers, host: `${port}-${record.name}.${gw.domain}:${gw.port}`, [TOKEN_HEADER]: record.token ?? '' },
      },
      (res) => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', rawHeaders: res.rawHeaders, body: res }),
    );
    req.on('error', (err) => reject(new RuntimeError(`the gateway did not answer: ${err.message}`)));
    const body = options.body;
    if (body === undefined) req.end();
    else if (typeof body === 'string' || Buffer.isBuffer(body)) req.end(body);
    else body.pipe(req);
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
    const req = request({
      ...via(gw),
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
