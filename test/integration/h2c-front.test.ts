// h2c on the nginx engine over plain HTTP with an nginx older than 1.25.1 (Debian's 1.22, forced
// with SBX_NGINX): HAProxy owns the gateway port and hands each connection by its first bytes to nginx's HTTP/1.1 or HTTP/2 listener (unix sockets that take a
// PROXY line with the client's address). Driven with curl on both protocols; attacked with a
// forged PROXY line, a short request that must not wait, a local user at nginx's sockets, and a
// killed HAProxy. (gRPC through this path: grpc-python.test.ts.)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { curl, eventually, oneErrorLine, run, World } from '../helpers.ts';
import { EMPTY_SETTINGS, forgedProxyLineRefused, H2_PREFACE, makeH2cWeb, rawExchange, seenHeader } from '../h2c-fixture.ts';

// Debian's nginx (1.22): the gateway's nginx 1.26 (scripts/setup) takes h2c itself (h2c-native.test.ts).
const world = new World({ SBX_NGINX: '/usr/sbin/nginx' });
let gw = 0;
let token = '';

after(() => world.cleanup());

const raw = (send: string | Buffer | Array<string | Buffer>, waitMs?: number) => rawExchange(gw, send, waitMs);
const seen = seenHeader;

const haproxyPids = async () => (await run('pgrep', ['-f', `haproxy -W -f ${join(world.home, 'run')}/haproxy.cfg`])).stdout.split('\n').filter(Boolean).map(Number);

before(async () => {
  assert.ok(existsSync('/usr/sbin/haproxy'), 'HAProxy (scripts/setup installs it)');
  token = await makeH2cWeb(world);
  gw = world.gatewayPort();
});

describe('h2c and HTTP/1.1 on one plaintext port, with nginx', () => {
  it('gateway status: engine nginx, h2c true; plain curl gets HTTP/1.1 and --http2-prior-knowledge gets HTTP/2 from the same URL', async () => {
    const status = await world.json(['gateway', 'status']);
    assert.equal(status.engine, 'nginx');
    assert.equal(status.h2c, true);
    assert.equal(status.h2cBy, 'haproxy');
    const h1 = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', world.url(8000, 'web')]);
    assert.equal(h1.stdout, '1.1 200');
    const h2 = await run('curl', ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', world.url(8000, 'web')]);
    assert.equal(h2.stdout, '2 200', h2.stderr);
    // Control: nginx serves the public port itself (its map has the route), not the Node gateway.
    assert.match(readFileSync(join(world.home, 'run', 'nginx.conf'), 'utf8'), /"8000-web\.sbx\.localhost" sbx_/);
  });

  it('the sandbox sees the client\'s address (from the PROXY line), on both protocols, public and private ports', async () => {
    for (const extra of [[], ['--http2-prior-knowledge']]) {
      const pub = await curl([...extra, world.url(8000, 'web')]);
      assert.equal(pub.status, 200, pub.body);
      assert.equal(seen(pub.body, 'X-Forwarded-For'), '127.0.0.1', `public, ${extra.join(' ') || 'HTTP/1.1'}`);
      const priv = await curl([...extra, '-H', `x-sbx-traffic-token: ${token}`, world.url(8001, 'web')]);
      assert.equal(priv.status, 200, priv.body);
      assert.match(seen(priv.body, 'X-Forwarded-For'), /^127\.0\.0\.1(, 127\.0\.0\.1)?$/, `private, ${extra.join(' ') || 'HTTP/1.1'}`);
    }
  });

  it('an h2c-only server gets HTTP/2: through the Node gateway while its port is not known, then straight from nginx (grpc_pass); an HTTP/1.1 server\'s port is learnt as such', async () => {
    const h2 = ['-sS', '--http2-prior-knowledge', '-w', ' %{http_version} %{http_code}'];
    const conf = () => readFileSync(join(world.home, 'run', 'nginx.conf'), 'utf8');
    await eventually(async () => (await run('curl', [...h2, world.url(8002, 'web')])).stdout === 'h2c only\n 2 200', 'the h2c-only server');
    await eventually(async () => conf().includes('"8002-web.sbx.localhost" h2;'), 'nginx to route the port as HTTP/2');
    const direct = await run('curl', [...h2, world.url(8002, 'web')]);
    assert.equal(direct.stdout, 'h2c only\n 2 200', direct.stderr);
    // Control: plain HTTP/1.1 to an h2c-only server is not something anyone can serve; HTTP/2 to the
    // HTTP/1.1 server still works, and its port is learnt as HTTP/1.1 (straight from nginx again).
    assert.equal((await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', '--http2-prior-knowledge', world.url(8000, 'web')])).stdout, '2 200');
    await eventually(async () => conf().includes('"8000-web.sbx.localhost" h1;'), 'nginx to route the HTTP/1.1 port as HTTP/1.1');
    assert.equal((await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', '--http2-prior-knowledge', world.url(8000, 'web')])).stdout, '2 200');
  });

  it('HTTP/2 and HTTP/1.1 in turn to a private port (both through the Node gateway\'s socket): each gets its own protocol back, never the other\'s idle connection', async () => {
    // nginx keeps idle connections per upstream block: an HTTP/2 one (grpc_pass) taken up again by
    // proxy_pass for an HTTP/1.1 request answered it with HTTP/2 frames (found while building this).
    for (let i = 0; i < 5; i++) {
      for (const extra of [['--http2-prior-knowledge'], []]) {
        const r = await run('curl', ['-sS', ...extra, '-H', `x-sbx-traffic-token: ${token}`, '-o', '/dev/null', '-w', '%{http_version} %{http_code}', world.url(8001, 'web')]);
        assert.equal(r.stdout, `${extra.length ? '2' : '1.1'} 200`, `round ${i}, ${extra.join(' ') || 'HTTP/1.1'}: ${r.stderr}`);
      }
    }
  });

  it('HTTP/2 answers of the gateway itself: 403 without the token, 404 for a port not exposed', async () => {
    const h2 = ['--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_version} %{http_code}'];
    assert.equal((await run('curl', ['-sS', ...h2, world.url(8001, 'web')])).stdout, '2 403');
    assert.equal((await run('curl', ['-sS', ...h2, world.url(8099, 'web')])).stdout, '2 404');
  });

  it('a request body passes whole (HTTP/1.1 through the front)', async () => {
    const r = await curl(['--data-binary', 'x'.repeat(100_000), world.url(8000, 'web', '/upload')]);
    assert.equal(r.status, 200);
    assert.equal(JSON.parse(r.body).bodySize, 100_000);
  });
});

describe('attacks on the front', () => {
  it('a client\'s own PROXY line is not believed: nginx gets HAProxy\'s first, so the client\'s is a bad request (400), and the sandbox never sees its address', async () => {
    await forgedProxyLineRefused(gw);
    // Control: an X-Forwarded-For the client sends is kept as the client's claim, with the real address last.
    const claimed = await curl(['-H', 'X-Forwarded-For: 6.6.6.6', world.url(8000, 'web')]);
    assert.equal(seen(claimed.body, 'X-Forwarded-For'), '6.6.6.6, 127.0.0.1');
  });

  it('a request shorter than the HTTP/2 preface is answered at once, not after the front\'s 2 s wait', async () => {
    const r = await raw('GET / HTTP/1.0\r\n\r\n');
    assert.match(r.text, /^HTTP\/1\.1 \d{3} /, r.text.slice(0, 200)); // (nginx's 400: no Host)
    assert.ok(r.firstMs >= 0 && r.firstMs < 1000, `first byte after ${r.firstMs} ms`);
  });

  it('the preface in two pieces, split where its start parses as a whole HTTP/1 request ("PRI * HTTP/2.0" and a blank line), still reaches HTTP/2', async () => {
    const r = await raw([H2_PREFACE.slice(0, 18), Buffer.concat([Buffer.from(H2_PREFACE.slice(18)), EMPTY_SETTINGS])], 2000);
    assert.ok(r.text.length >= 9, 'an answer');
    assert.doesNotMatch(r.text, /^HTTP\/1/, 'not an HTTP/1.1 answer');
    assert.equal(r.text.charCodeAt(3), 4, 'a SETTINGS frame first (HTTP/2)');
  });

  it('half a preface, then nothing: the connection is handed on after 2 s and closed by nginx, not held by the front forever', async () => {
    const r = await raw('PRI * HTTP/2.0\r\n', 15_000);
    assert.ok(r.firstMs === -1 || r.text.startsWith('HTTP/1.1 400'), r.text.slice(0, 100));
  });

  it('another local user cannot reach nginx\'s PROXY sockets (it could claim any address there); the gateway\'s own user runs HAProxy', async () => {
    const dir = /socket and temp files in (\S+)\)/.exec(await world.gatewayLog())?.[1];
    assert.ok(dir, 'the workers\' directory is in the log');
    for (const sock of ['nginx-h1.sock', 'nginx-h2c.sock']) {
      assert.ok(existsSync(join(dir!, sock)), sock);
      const py = `import socket; s = socket.socket(socket.AF_UNIX); s.connect(${JSON.stringify(join(dir!, sock))}); print("connected")`;
      const r = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '/usr/bin/python3', '-c', py]);
      assert.notEqual(r.code, 0, `nobody connected to ${sock}`);
      assert.match(r.stderr, /PermissionError/);
    }
    // The worker carries the connections; the master, which only starts and ends it, stays root
    // (a change of user would clear the parent-death signal that ends it with the gateway).
    const pids = await haproxyPids();
    assert.equal(pids.length, 2, 'a master and one worker');
    const field = (pid: number, name: string) => new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!;
    const worker = pids.find((p) => pids.includes(Number(field(p, 'PPid'))))!;
    const uid = field(worker, 'Uid');
    assert.notEqual(uid, '0', 'the worker does not run as root');
    assert.equal((await run('id', ['-un', uid])).stdout.trim(), 'sbx-gateway');
  });

  it('HAProxy killed: the gateway stops rather than serve half, and the next command starts it again with a new front', async () => {
    const pid = Number(readFileSync(join(world.home, 'run', 'haproxy.pid'), 'utf8')); // the master
    const gwPid = (await world.gatewayState()).pid;
    process.kill(pid!, 'SIGKILL');
    await eventually(async () => !existsSync(`/proc/${gwPid}`), 'the gateway to stop');
    assert.match(await world.gatewayLog(), /haproxy exited \(SIGKILL\)[^\n]*: the gateway stops/);
    await eventually(async () => (await haproxyPids()).length === 0, 'its worker to end with its master');
    await world.json(['gateway', 'start']);
    gw = world.gatewayPort();
    const h2 = await run('curl', ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', world.url(8000, 'web')]);
    assert.equal(h2.stdout, '2 200', h2.stderr);
    assert.equal((await haproxyPids()).length, 2);
  });

  it('gateway stop leaves no HAProxy and no nginx socket behind', async () => {
    const dir = /socket and temp files in (\S+)\)/.exec(await world.gatewayLog())?.[1];
    assert.equal((await world.sbx(['gateway', 'stop'])).code, 0);
    assert.deepEqual(await haproxyPids(), []);
    assert.ok(!existsSync(dir!), `${dir} removed`);
    assert.ok(!existsSync(join(world.home, 'run', 'haproxy.pid')));
  });
});

describe('SBX_GATEWAY_H2C', () => {
  it('0: nginx alone (HTTP/1.1 only: an h2c client gets no HTTP/2), and status says h2c false', async () => {
    const env = { SBX_GATEWAY_H2C: '0' };
    await world.json(['gateway', 'start'], { env });
    gw = world.gatewayPort();
    const status = await world.json(['gateway', 'status']);
    assert.equal(status.h2c, false);
    assert.equal(status.h2cBy, undefined);
    assert.deepEqual(await haproxyPids(), []);
    const h1 = await run('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', world.url(8000, 'web')]);
    assert.equal(h1.stdout, '1.1 200');
    const h2 = await run('curl', ['-sS', '--max-time', '5', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', world.url(8000, 'web')]);
    assert.notEqual(h2.stdout, '2 200');
    assert.equal((await world.sbx(['gateway', 'stop'])).code, 0);
  });

  it('1 without HAProxy: exit 2 naming what to install, and no gateway is left', async () => {
    const r = await world.sbx(['gateway', 'start'], { env: { SBX_GATEWAY_H2C: '1', SBX_HAPROXY: '/nonexistent/haproxy' } });
    assert.equal(r.code, 2, r.stderr);
    assert.match(oneErrorLine(r), /^error: SBX_GATEWAY_H2C=1 needs nginx 1\.25\.1 or later, or HAProxy in front of an older nginx.*apt-get install haproxy/);
    assert.equal((await world.json(['gateway', 'status'])).running, false);
  });

  it('a value it does not know: exit 2 naming the accepted ones', async () => {
    const r = await world.sbx(['gateway', 'start'], { env: { SBX_GATEWAY_H2C: 'maybe' } });
    assert.equal(r.code, 2);
    assert.match(oneErrorLine(r), /^error: invalid SBX_GATEWAY_H2C "maybe": use 1 .*, 0 .* or auto/);
    assert.equal((await world.json(['gateway', 'status'])).running, false);
  });

  it('1 with HAProxy: served, as by default', async () => {
    await world.json(['gateway', 'start'], { env: { SBX_GATEWAY_H2C: '1' } });
    gw = world.gatewayPort();
    assert.equal((await world.json(['gateway', 'status'])).h2c, true);
    const h2 = await run('curl', ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', world.url(8000, 'web')]);
    assert.equal(h2.stdout, '2 200', h2.stderr);
  });
});
