// One plaintext listener for HTTP/1.1 and HTTP/2 with prior knowledge (h2c): a connection that
// opens with HTTP/2's 24-byte preface goes to the HTTP/2 server, any other to the HTTP/1.1 one.
// The bytes read to decide are put back (unshift): both servers parse the connection from its
// first byte (Node's HTTP/2 session takes what is already buffered before it reads the socket).
import type { Server as HttpServer } from 'node:http';
import type { Http2Server } from 'node:http2';
import type { Socket } from 'node:net';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** A connection that has not said which protocol it speaks by then is closed (as Node's headersTimeout would). */
export const SNIFF_TIMEOUT_MS = 60_000;

/** What the first bytes of a connection say: 'h2', 'h1', or 'more' (a prefix of the preface). */
export function protocolOf(first: Buffer): 'h2' | 'h1' | 'more' {
  const n = Math.min(first.length, PREFACE.length);
  if (first.subarray(0, n).compare(PREFACE, 0, n) !== 0) return 'h1';
  return n === PREFACE.length ? 'h2' : 'more';
}

/** Makes `h1`'s listener hand connections that start with the preface to `h2`; `destroyAll` ends those not yet handed on. */
export function acceptHttp2PriorKnowledge(h1: HttpServer, h2: Http2Server): { destroyAll(): void } {
  const http1 = h1.listeners('connection') as Array<(socket: Socket) => void>;
  const undecided = new Set<Socket>();
  h1.removeAllListeners('connection');
  h1.on('connection', (socket: Socket) => {
    undecided.add(socket);
    let seen: Buffer = Buffer.alloc(0);
    const silent = setTimeout(() => socket.destroy(), SNIFF_TIMEOUT_MS);
    const decide = (chunk: Buffer): void => {
      seen = seen.length ? Buffer.concat([seen, chunk]) : chunk;
      const kind = protocolOf(seen);
      if (kind === 'more') return;
      clearTimeout(silent);
      undecided.delete(socket);
      socket.off('data', decide);
      socket.off('end', early);
      socket.pause();
      socket.unshift(seen);
      if (kind === 'h2') h2.emit('connection', socket);
      else for (const l of http1) l.call(h1, socket);
      process.nextTick(() => socket.resume());
    };
    // A connection closed before it said anything is simply gone.
    const early = (): void => {
      clearTimeout(silent);
      socket.destroy();
    };
    socket.once('close', () => {
      clearTimeout(silent);
      undecided.delete(socket);
    });
    socket.on('data', decide);
    socket.once('end', early);
    socket.on('error', () => {});
  });
  return { destroyAll: () => undecided.forEach((s) => s.destroy()) };
}
