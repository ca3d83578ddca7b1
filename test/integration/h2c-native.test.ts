// h2c on the default engine over plain HTTP with the nginx that scripts/setup builds (1.26): nginx
// itself tells HTTP/2 with prior knowledge from HTTP/1.1 by the preface, on its own TCP listener,
// with no HAProxy hop (Debian's 1.22 behind HAProxy: h2c-front.test.ts). Driven with curl on both
// protocols; attacked with a forged PROXY line, a split and a half preface, and a pipelined
// HTTP/1.1 request that names a private port after a public one. (gRPC: grpc-python.test.ts.)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { connect as connectHttp2, type ClientHttp2Session } from 'node:http2';
import { join } from 'node:path';
import { curl, eventually, run, World } from '../helpers.ts';
import { EMPTY_SETTINGS, forgedProxyLineRefused, H2_PREFACE, makeH2cWeb, rawExchange, seenHeader } from '../h2c-fixture.ts';
import { BUILT_NGINX } from '../../src/gateway/nginx.ts';

const world = new World();
let gw = 0;
let token = '';

after(() => world.cleanup());

const raw = (send: string | Buffer | Array<string | Buffer>, waitMs?: number) => rawExchange(gw, send, waitMs);
const h2 = ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_version} %{http_code}'];
const h1 = ['-sS', '-o', '/dev/null', '-w', '%{http_version} %{http_code}'];
const haproxyRuns = async () => (await run('pgrep', ['-f', `haproxy -W -f ${join(world.home, 'run')}/haproxy.cfg`])).stdout.trim() !== '';

before(async () => {
  assert.ok(existsSync(BUILT_NGINX), `nginx 1.26 at ${BUILT_NGINX} (scripts/setup builds it)`);
  token = await makeH2cWeb(world);
  gw = world.gatewayPort();
});

describe('h2c and HTTP/1.1 on one plaintext port, nginx alone', () => {
  it('gateway status: engine nginx, h2c true, no HAProxy; nginx owns the port; plain curl gets HTTP/1.1 and --http2-prior-knowledge HTTP/2 from the same URL', async () => {
    const status = await world.json(['gateway', 'status']);
    assert.equal(status.engine, 'nginx');
    assert.equal(status.h2c, true);
    assert.equal(status.h2cBy, 'nginx');
    assert.equal(await haproxyRuns(), false, 'no HAProxy');
    assert.ok(!existsSync(join(world.home, 'run', 'haproxy.pid')));
    assert.match(await world.gatewayLog(), new RegExp(`h2c: nginx \\(${BUILT_NGINX.replace(/\//g, '\\/')}\\) tells it from HTTP/1\\.1`));
    const listener = (await run('ss', ['-ltnpH', `sport = :${gw}`])).stdout;
    assert.match(listener, /"nginx"/, listener);
    const conf = readFileSync(join(world.home, 'run', 'nginx.conf'), 'utf8');
    assert.match(conf, /^\s+http2 on;$/m);
    assert.doesNotMatch(conf, /proxy_protocol/, 'no PROXY lines: nginx sees clients itself');
    assert.equal((await run('curl', [...h1, world.url(8000, 'web')])).stdout, '1.1 200');
    const r = await run('curl', [...h2, world.url(8000, 'web')]);
    assert.equal(r.stdout, '2 200', r.stderr);
  });

  it('the sandbox sees the client\'s address on both protocols, public and private ports; an X-Forwarded-For the client sends stays its claim, with the real address last', async () => {
    for (const extra of [[], ['--http2-prior-knowledge']]) {
      const pub = await curl([...extra, world.url(8000, 'web')]);
      assert.equal(pub.status, 200, pub.body);
      assert.equal(seenHeader(pub.body, 'X-Forwarded-For'), '127.0.0.1', `public, ${extra.join(' ') || 'HTTP/1.1'}`);
      const priv = await curl([...extra, '-H', `x-sbx-traffic-token: ${token}`, world.url(8001, 'web')]);
      assert.equal(priv.status, 200, priv.body);
      assert.match(seenHeader(priv.body, 'X-Forwarded-For')!, /^127\.0\.0\.1(, 127\.0\.0\.1)?$/, `private, ${extra.join(' ') || 'HTTP/1.1'}`);
      const claimed = await curl([...extra, '-H', 'X-Forwarded-For: 6.6.6.6', world.url(8000, 'web')]);
      assert.equal(seenHeader(claimed.body, 'X-Forwarded-For'), '6.6.6.6, 127.0.0.1');
    }
  });

  it('an h2c-only server gets HTTP/2, straight from nginx (grpc_pass) once the port is known; an HTTP/1.1 server gets HTTP/1.1 from an HTTP/2 client', async () => {
    const body = ['-sS', '--http2-prior-knowledge', '-w', ' %{http_version} %{http_code}'];
    const conf = () => readFileSync(join(world.home, 'run', 'nginx.conf'), 'utf8');
    await eventually(async () => (await run('curl', [...body, world.url(8002, 'web')])).stdout === 'h2c only\n 2 200', 'the h2c-only server');
    await eventually(async () => conf().includes('"8002-web.sbx.localhost" h2;'), 'nginx to route the port as HTTP/2');
    assert.equal((await run('curl', [...body, world.url(8002, 'web')])).stdout, 'h2c only\n 2 200');
    assert.equal((await run('curl', [...h2, world.url(8000, 'web')])).stdout, '2 200');
    await eventually(async () => conf().includes('"8000-web.sbx.localhost" h1;'), 'nginx to route the HTTP/1.1 port as HTTP/1.1');
    assert.equal((await run('curl', [...h2, world.url(8000, 'web')])).stdout, '2 200');
  });

  it('the gateway\'s own answers over HTTP/2: 403 without the token, 200 with it, 404 for a port not exposed; HTTP/1.1 and HTTP/2 in turn to the private port each get their own protocol', async () => {
    assert.equal((await run('curl', [...h2, world.url(8001, 'web')])).stdout, '2 403');
    assert.equal((await run('curl', [...h2, world.url(8099, 'web')])).stdout, '2 404');
    for (let i = 0; i < 3; i++) {
      assert.equal((await run('curl', [...h2, '-H', `x-sbx-traffic-token: ${token}`, world.url(8001, 'web')])).stdout, '2 200');
      assert.equal((await run('curl', [...h1, '-H', `x-sbx-traffic-token: ${token}`, world.url(8001, 'web')])).stdout, '1.1 200');
    }
  });

  it('a request body passes whole on both protocols', async () => {
    for (const extra of [[], ['--http2-prior-knowledge']]) {
      const r = await curl([...extra, '--data-binary', 'x'.repeat(100_000), world.url(8000, 'web', '/upload')]);
      assert.equal(r.status, 200);
      assert.equal(JSON.parse(r.body).bodySize, 100_000);
    }
  });
});

describe('attacks on the shared port', () => {
  it('a PROXY line from a client is a bad request (400), before HTTP/1.1 or before the preface; the sandbox never sees its address', async () => {
    await forgedProxyLineRefused(gw);
  });

  it('the preface in two pieces (its start parses as a whole HTTP/1 request line and a blank line) still reaches HTTP/2; a short HTTP/1.0 request is answered at once', async () => {
    const r = await raw([H2_PREFACE.slice(0, 18), Buffer.concat([Buffer.from(H2_PREFACE.slice(18)), EMPTY_SETTINGS])], 2000);
    assert.ok(r.text.length >= 9, 'an answer');
    assert.doesNotMatch(r.text, /^HTTP\/1/, 'not an HTTP/1.1 answer');
    assert.equal(r.text.charCodeAt(3), 4, 'a SETTINGS frame first (HTTP/2)');
    const short = await raw('GET / HTTP/1.0\r\n\r\n');
    assert.match(short.text, /^HTTP\/1\.1 \d{3} /, short.text.slice(0, 200));
    assert.ok(short.firstMs >= 0 && short.firstMs < 1000, `first byte after ${short.firstMs} ms`);
  });

  it('half a preface, then nothing: nginx closes the connection within its header timeout (15 s), it is not held', async () => {
    const began = Date.now();
    const r = await raw('PRI * HTTP/2.0\r\n', 25_000);
    assert.ok(Date.now() - began < 20_000, `closed after ${Date.now() - began} ms`);
    assert.ok(r.firstMs === -1 || /^HTTP\/1\.1 400|^\0/.test(r.text), r.text.slice(0, 100));
  });

  it('HTTP/1.1 pipelining: a second request on a public port\'s connection that names the private port gets 403 without the token (each request is routed by its own Host); control: with the token, 200', async () => {
    const second = (extra: string) => `GET / HTTP/1.1\r\nHost: 8001-web.sbx.localhost\r\n${extra}Connection: close\r\n\r\n`;
    const first = 'GET / HTTP/1.1\r\nHost: 8000-web.sbx.localhost\r\n\r\n';
    const denied = await raw(first + second(''));
    const statuses = [...denied.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    assert.deepEqual(statuses, ['200', '403'], denied.text.slice(0, 300));
    const allowed = await raw(first + second(`x-sbx-traffic-token: ${token}\r\n`));
    assert.deepEqual([...allowed.text.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]), ['200', '200']);
  });
});

describe('one HTTP/2 connection, several hosts', () => {
  /** A stream on `session`: its status and the port of the echo server that answered (when one did). */
  const ask = (session: ClientHttp2Session, headers: Record<string, string>) =>
    new Promise<{ status: number; port?: number }>((resolve, reject) => {
      const req = session.request({ ':method': 'GET', ':path': '/', ...headers });
      let status = 0;
      let body = '';
      req.on('response', (h) => (status = Number(h[':status'])));
      req.setEncoding('utf8');
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        let port: number | undefined;
        try {
          port = JSON.parse(body).port;
        } catch {}
        resolve({ status, ...(port ? { port } : {}) });
      });
      req.on('error', reject);
      req.end();
    });

  it('each stream is routed and checked by its own :authority: on a connection a public port opened, the private port is 403 without the token and 200 with it; a Host header naming the private port beside a public :authority never reaches it without the token', async () => {
    const session = connectHttp2(`http://127.0.0.1:${gw}`);
    try {
      assert.deepEqual(await ask(session, { ':authority': '8000-web.sbx.localhost' }), { status: 200, port: 8000 });
      assert.equal((await ask(session, { ':authority': '8001-web.sbx.localhost' })).status, 403);
      assert.deepEqual(await ask(session, { ':authority': '8001-web.sbx.localhost', 'x-sbx-traffic-token': token }), { status: 200, port: 8001 });
      for (const headers of [{ ':authority': '8000-web.sbx.localhost', host: '8001-web.sbx.localhost' }, { ':authority': '8001-web.sbx.localhost', host: '8000-web.sbx.localhost' }]) {
        const mixed = await ask(session, headers);
        assert.notEqual(mixed.port, 8001, `${JSON.stringify(headers)}: the private port answered without the token (${mixed.status})`);
      }
      // Control: the connection still serves the public port afterwards.
      assert.deepEqual(await ask(session, { ':authority': '8000-web.sbx.localhost' }), { status: 200, port: 8000 });
    } finally {
      session.close();
    }
  });
});

describe('SBX_GATEWAY_H2C with nginx 1.26', () => {
  it('0: HTTP/1.1 only (no `http2 on`: an h2c client gets no HTTP/2), and status says h2c false', async () => {
    assert.equal((await world.sbx(['gateway', 'stop'])).code, 0);
    await world.json(['gateway', 'start'], { env: { SBX_GATEWAY_H2C: '0' } });
    gw = world.gatewayPort();
    const off = await world.json(['gateway', 'status']);
    assert.deepEqual([off.h2c, off.h2cBy], [false, undefined]);
    assert.doesNotMatch(readFileSync(join(world.home, 'run', 'nginx.conf'), 'utf8'), /http2 on;/);
    assert.equal((await run('curl', [...h1, world.url(8000, 'web')])).stdout, '1.1 200');
    const r = await run('curl', ['--max-time', '5', ...h2, world.url(8000, 'web')]);
    assert.notEqual(r.stdout, '2 200');
    assert.equal((await world.sbx(['gateway', 'stop'])).code, 0);
  });

  it('1 with no HAProxy anywhere: served all the same, by nginx itself', async () => {
    await world.json(['gateway', 'start'], { env: { SBX_GATEWAY_H2C: '1', SBX_HAPROXY: '/nonexistent/haproxy' } });
    gw = world.gatewayPort();
    assert.equal((await world.json(['gateway', 'status'])).h2c, true);
    assert.equal(await haproxyRuns(), false);
    const r = await run('curl', [...h2, world.url(8000, 'web')]);
    assert.equal(r.stdout, '2 200', r.stderr);
  });
});
