// One small HTTP request to nginx's own endpoint (the configuration version its workers serve):
// a fresh connection each time, a time limit, and no answer rather than an error when it fails.
import { request, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface Ask {
  host: string;
  port: number;
  /** The Host header, which picks the gateway's own endpoints. */
  hostHeader: string;
  path: string;
  method?: string;
  timeoutMs: number;
  /** nginx serves HTTPS: asked over TLS (its own listener on loopback: the certificate is not checked). */
  tls?: boolean;
  /** A unix socket to ask on instead of host and port (nginx's control socket behind the h2c front). */
  socketPath?: string;
}

export function askGateway(a: Ask): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    const send: (o: RequestOptions, cb: (res: IncomingMessage) => void) => ClientRequest = a.tls ? (o, cb) => httpsRequest({ ...o, rejectUnauthorized: false }, cb) : request;
    const req = send({ ...(a.socketPath ? { socketPath: a.socketPath } : { host: a.host, port: a.port }), method: a.method ?? 'GET', path: a.path, headers: { host: a.hostHeader }, agent: false, timeout: a.timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', () => resolve(undefined));
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}
