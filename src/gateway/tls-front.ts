// HTTPS on the gateway's port (SBX_GATEWAY_TLS=1, Node engine): TLS is ended here, HTTP/2 or
// HTTP/1.1 chosen by ALPN, and each decrypted connection handed to the gateway's HTTP server,
// whose listener tells the two apart by the HTTP/2 preface (h2c-sniff.ts) as for plain text.
import type { Server as HttpServer } from 'node:http';
import type { Socket } from 'node:net';
import { createServer, type Server as TlsServer, type TLSSocket } from 'node:tls';

export function createTlsFront(http: HttpServer, credentials: { cert: string; key: string }): TlsServer {
  const handshaking = new Set<Socket>();
  const front = createServer({ cert: credentials.cert, key: credentials.key, ALPNProtocols: ['h2', 'http/1.1'], minVersion: 'TLSv1.2', handshakeTimeout: 10_000 });
  front.on('connection', (raw: Socket) => {
    handshaking.add(raw);
    raw.once('close', () => handshaking.delete(raw));
  });
  front.on('secureConnection', (socket: TLSSocket) => {
    handshaking.delete(socket as unknown as Socket);
    http.emit('connection', socket);
  });
  // A client that does not trust the certificate, or speaks no TLS: its connection simply ends.
  front.on('tlsClientError', (_err, socket) => socket.destroy());
  // The gateway's stop (main.ts) closes and ends the HTTP server's connections: this front's too.
  const closeAll = http.closeAllConnections.bind(http);
  http.closeAllConnections = () => {
    closeAll();
    for (const s of handshaking) s.destroy();
  };
  http.once('close', () => front.close());
  return front;
}
