// One small HTTP request to nginx's own endpoint (the configuration version its workers serve):
// a fresh connection each time, a time limit, and no answer rather than an error when it fails.
import { request } from 'node:http';

export interface Ask {
  host: string;
  port: number;
  /** The Host header, which picks the gateway's own endpoints. */
  hostHeader: string;
  path: string;
  method?: string;
  timeoutMs: number;
}

export function askGateway(a: Ask): Promise<{ status: number; body: string } | undefined> {
  return new Promise((resolve) => {
    const req = request({ host: a.host, port: a.port, method: a.method ?? 'GET', path: a.path, headers: { host: a.hostHeader }, agent: false, timeout: a.timeoutMs }, (res) => {
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
