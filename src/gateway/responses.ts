// The gateway's own answers (404, 403, 502, 504...): short, and in the form the client asked for:
// JSON for APIs, HTML for browsers, plain text otherwise.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerResponse } from 'node:http2';
import type { Duplex } from 'node:stream';

export interface GatewayError {
  status: number;
  /** A stable machine-readable code, e.g. "token_missing". */
  code: string;
  message: string;
}

const REASONS: Record<number, string> = { 400: 'Bad Request', 403: 'Forbidden', 404: 'Not Found', 500: 'Internal Server Error', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout' };

function render(accept: string, e: GatewayError): { type: string; body: string } {
  if (/application\/json/.test(accept)) {
    return { type: 'application/json', body: JSON.stringify({ error: { status: e.status, code: e.code, message: e.message } }) + '\n' };
  }
  if (/text\/html/.test(accept)) {
    const esc = e.message.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
    return {
      type: 'text/html; charset=utf-8',
      body: `<!doctype html><html><head><meta charset="utf-8"><title>${e.status} ${REASONS[e.status] ?? ''}</title></head><body style="font-family:system-ui,sans-serif;margin:3em"><h1>${e.status} ${REASONS[e.status] ?? ''}</h1><p>${esc}</p><p><small>sbx gateway · ${e.code}</small></p></body></html>\n`,
    };
  }
  return { type: 'text/plain; charset=utf-8', body: `${e.status} ${REASONS[e.status] ?? ''}: ${e.message}\n` };
}

/**
 * gRPC clients read a status, not an HTTP page: the gateway's answers to a gRPC call (HTTP/2,
 * application/grpc) are trailers-only responses. 403 is UNAUTHENTICATED (no or a wrong token).
 */
const GRPC_STATUS: Record<number, number> = { 400: 3, 403: 16, 404: 5, 502: 14, 503: 14, 504: 4 };
const GRPC_INTERNAL = 13;

function isGrpc(req: IncomingMessage): boolean {
  return req.httpVersionMajor === 2 && /^application\/grpc/.test(String(req.headers['content-type'] ?? ''));
}

export function sendError(req: IncomingMessage, res: ServerResponse, e: GatewayError): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (req.httpVersionMajor === 2) {
    // The client may have reset the stream meanwhile: Node throws on a closed one.
    const { stream } = res as unknown as Http2ServerResponse;
    if (stream.destroyed || stream.closed) return;
    try {
      if (isGrpc(req)) {
        // On the stream itself: the compatibility layer would add a frame of (empty) trailers after it.
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(GRPC_STATUS[e.status] ?? GRPC_INTERNAL), 'grpc-message': encodeURIComponent(e.message), 'x-sbx-error': e.code }, { endStream: true });
        return;
      }
      const { type, body } = render(String(req.headers.accept ?? ''), e);
      res.writeHead(e.status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'x-sbx-error': e.code, 'cache-control': 'no-store' });
      res.end(body);
    } catch {
      stream.destroy();
    }
    return;
  }
  const { type, body } = render(String(req.headers.accept ?? ''), e);
  res.writeHead(e.status, { 'content-type': type, 'content-length': Buffer.byteLength(body), 'x-sbx-error': e.code, 'cache-control': 'no-store' });
  res.end(body);
}

/** The same for a request that asked to upgrade (WebSocket, tunnel): written on the raw socket. */
export function sendUpgradeError(req: IncomingMessage, socket: Duplex, e: GatewayError): void {
  const { type, body } = render(String(req.headers.accept ?? ''), e);
  socket.end(
    `HTTP/1.1 ${e.status} ${REASONS[e.status] ?? 'Error'}\r\ncontent-type: ${type}\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-sbx-error: ${e.code}\r\nconnection: close\r\n\r\n${body}`,
  );
}
