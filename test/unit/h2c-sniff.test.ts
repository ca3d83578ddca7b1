// Telling HTTP/2 with prior knowledge from HTTP/1.1 by a connection's first bytes, and the listener
// that hands each to its server (real sockets on loopback, Node's own clients).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, get } from 'node:http';
import { connect, createServer as createHttp2Server } from 'node:http2';
import { createConnection, type AddressInfo } from 'node:net';
import { acceptHttp2PriorKnowledge, protocolOf } from '../../src/gateway/h2c-sniff.ts';

const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

test('protocolOf: the whole preface is h2, a prefix of it asks for more, anything else is HTTP/1.1', () => {
  assert.equal(protocolOf(Buffer.from(PREFACE)), 'h2');
  assert.equal(protocolOf(Buffer.from(PREFACE + '\x00\x00')), 'h2');
  assert.equal(protocolOf(Buffer.from('PRI * HT')), 'more');
  assert.equal(protocolOf(Buffer.from('P')), 'more');
  assert.equal(protocolOf(Buffer.from('GET / HTTP/1.1\r\n')), 'h1');
  assert.equal(protocolOf(Buffer.from('PRI * HTTP/1.1\r\n\r\n')), 'h1');
  assert.equal(protocolOf(Buffer.from('POST')), 'h1');
});

test('one listener: HTTP/1.1 to the HTTP/1.1 server, h2c to the HTTP/2 one, a preface sent a byte at a time too', async () => {
  const h1 = createServer((req, res) => res.end(`h1 ${req.httpVersion}`));
  const h2 = createHttp2Server((req, res) => res.end(`h2 ${req.httpVersion}`));
  acceptHttp2PriorKnowledge(h1, h2);
  await new Promise<void>((r) => h1.listen(0, '127.0.0.1', r));
  const port = (h1.address() as AddressInfo).port;
  try {
    const viaH1 = await new Promise<string>((resolve, reject) => get(`http://127.0.0.1:${port}/`, (res) => { let b = ''; res.on('data', (d) => (b += d)).on('end', () => resolve(b)); }).on('error', reject));
    assert.equal(viaH1, 'h1 1.1');
    const ask = (createConnection?: () => ReturnType<typeof createConnectionSlow>) =>
      new Promise<string>((resolve, reject) => {
        const session = connect(`http://127.0.0.1:${port}`, createConnection ? { createConnection } : {});
        session.on('error', reject);
        const s = session.request({ ':path': '/' });
        let b = '';
        s.on('data', (d) => (b += d)).on('end', () => { session.close(); resolve(b); });
      });
    assert.equal(await ask(), 'h2 2.0');
    assert.equal(await ask(() => createConnectionSlow(port)), 'h2 2.0', 'the preface in 24 writes');
  } finally {
    h1.closeAllConnections();
    h1.close();
    h2.close();
  }
});

/** A socket whose first 24 bytes (the preface) go out one write at a time. */
function createConnectionSlow(port: number) {
  const socket = createConnection(port, '127.0.0.1');
  const write = socket.write.bind(socket);
  let sent = 0;
  (socket as unknown as { write: unknown }).write = (chunk: Buffer | string, ...rest: unknown[]) => {
    const buf = Buffer.from(chunk as Buffer);
    if (sent >= PREFACE.length) return write(buf, ...(rest as []));
    for (const byte of buf) write(Buffer.from([byte]));
    sent += buf.length;
    const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
    cb?.();
    return true;
  };
  socket.setNoDelay(true);
  return socket;
}
