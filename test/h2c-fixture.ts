// What the h2c tests of both plaintext paths share (h2c-front.test.ts: HAProxy before Debian's
// nginx; h2c-native.test.ts: nginx 1.25.1+ alone): a sandbox `web` with an echo server on 8000
// (public) and 8001 (private), and an h2c-only server on 8002 (public); raw bytes to the port.
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';
import { curl, eventually, run, type World } from './helpers.ts';

/** Bytes on a fresh connection to `port`: what came back, and how long the first byte took. Pieces go 300 ms apart. */
export function rawExchange(port: number, send: string | Buffer | Array<string | Buffer>, waitMs = 5000): Promise<{ text: string; firstMs: number }> {
  return new Promise((resolve) => {
    const s = createConnection(port, '127.0.0.1');
    const began = Date.now();
    let firstMs = -1;
    let text = '';
    s.setTimeout(waitMs, () => s.destroy());
    s.on('data', (d) => {
      if (firstMs < 0) firstMs = Date.now() - began;
      text += d.toString('latin1');
    });
    s.on('error', () => {});
    s.on('close', () => resolve({ text, firstMs }));
    const pieces = Array.isArray(send) ? send : [send];
    pieces.forEach((piece, i) => setTimeout(() => s.write(piece), i * 300));
  });
}

/** A header the echo server (test/fixtures/echo_server.py) received. */
export const seenHeader = (body: string, name: string) => (JSON.parse(body).headers as [string, string][]).find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1];

/** HTTP/2's connection preface, and an empty SETTINGS frame to follow it. */
export const H2_PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';
export const EMPTY_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);

/** Makes the sandbox `web` with its three servers; returns its traffic token. */
export async function makeH2cWeb(world: World): Promise<string> {
  await world.json(['create', '--name', 'web', '-p', '8000', '--', 'python3', '-c', 'import time; time.sleep(1e9)']);
  await world.put('web', 'echo_server.py', '/tmp/echo_server.py');
  for (const port of ['8000', '8001']) assert.equal((await world.sbx(['exec', '-d', 'web', '--', 'python3', '/tmp/echo_server.py', port])).code, 0);
  await world.json(['port', 'expose', 'web', '8001', '--private']);
  // An h2c-only server (nginx with `listen ... http2` and no TLS, as Node's http2.createServer()):
  // Debian's nginx from this host copied in (the image is the same Debian release).
  const box = await world.json(['inspect', 'web']);
  assert.equal((await run('docker', ['cp', '/usr/sbin/nginx', `${box.container}:/usr/sbin/nginx`])).code, 0);
  const conf = 'user root; worker_processes 1; pid /tmp/h2.pid; error_log stderr; events {} http { access_log off; client_body_temp_path /tmp; proxy_temp_path /tmp; fastcgi_temp_path /tmp; uwsgi_temp_path /tmp; scgi_temp_path /tmp; server { listen 8002 http2; location / { return 200 "h2c only\\n"; } } }';
  assert.equal((await world.sbx(['exec', 'web', '--', 'sh', '-c', `printf '%s' '${conf}' > /tmp/h2.conf`])).code, 0);
  assert.equal((await world.sbx(['exec', '-d', 'web', '--', '/usr/sbin/nginx', '-c', '/tmp/h2.conf', '-g', 'daemon off;'])).code, 0);
  await world.json(['port', 'expose', 'web', '8002']);
  const token = (await world.json(['inspect', 'web', '--show-token'])).token;
  await eventually(async () => (await curl([world.url(8000, 'web')])).status === 200, 'the echo server');
  return token;
}

/**
 * The attack of a client that sends its own PROXY line (to pass for another address): before an
 * HTTP/1.1 request and before the HTTP/2 preface, nginx must answer 400, and never echo the address.
 */
export async function forgedProxyLineRefused(port: number): Promise<void> {
  const forged = 'PROXY TCP4 6.6.6.6 127.0.0.1 4444 80\r\n';
  const r = await rawExchange(port, `${forged}GET / HTTP/1.1\r\nHost: 8000-web.sbx.localhost\r\nConnection: close\r\n\r\n`);
  assert.match(r.text, /^HTTP\/1\.1 400 /);
  assert.doesNotMatch(r.text, /6\.6\.6\.6/);
  // Nor before an HTTP/2 preface: that connection is not h2c (the preface is not first), so it is a bad HTTP/1.1 request.
  const h2 = await rawExchange(port, Buffer.concat([Buffer.from(forged), Buffer.from(H2_PREFACE), EMPTY_SETTINGS]));
  assert.match(h2.text, /^HTTP\/1\.1 400 /);
}
