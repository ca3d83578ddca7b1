// What both HTTP proxies of the gateway (the ingress front in server.ts, the egress proxy) share:
// which headers belong to one hop only, relaying a response, and handing an upgrade over to a raw
// connection.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { splice } from '../core/splice.ts';

export const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authorization', 'proxy-authenticate']);

/** Raw headers ([name, value, ...]) without the hop-by-hop ones. */
export function withoutHopByHop(raw: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

/** Sends an upstream response on: status, end-to-end headers, and the streamed body. */
export function relayResponse(upstream: IncomingMessage, res: ServerResponse): void {
  res.writeHead(upstream.statusCode ?? 502, upstream.statusMessage, withoutHopByHop(upstream.rawHeaders));
  upstream.pipe(res);
  upstream.on('error', () => res.destroy());
}

/** Writes an upgrade request's head (and any bytes after it) upstream, then joins the two. */
export function spliceUpgrade(client: Duplex, upstream: Duplex, requestLine: string, rawHeaders: readonly string[], head: Buffer): void {
  let text = `${requestLine}\r\n`;
  for (let i = 0; i < rawHeaders.length; i += 2) text += `${rawHeaders[i]}: ${rawHeaders[i + 1]}\r\n`;
  upstream.write(text + '\r\n');
  if (head.length) upstream.write(head);
  splice(client, upstream);
}
