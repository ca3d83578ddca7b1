// HTTPS URLs (SBX_GATEWAY_TLS=1) with sbx's own CA, driven with real clients that check
// certificates: curl --cacert (HTTP/2 by ALPN and HTTP/1.1), Node's WebSocket (wss://, trusting the
// CA through NODE_EXTRA_CA_CERTS), a real gRPC client over TLS; and refused: no CA, another CA,
// another name, an expired certificate. It runs with nginx ending TLS (the default engine) and
// again with SBX_GATEWAY_ENGINE=node (scripts/test), as the ingress tests do.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureAgentImage } from '../../src/api/agent-image.ts';
import { Runtime } from '../../src/runtime/docker.ts';
import { curl, eventually, ROOT, run, World } from '../helpers.ts';
import { userCertificate } from '../user-cert.ts';
import { BUILT_NGINX, findNginx } from '../../src/gateway/nginx.ts';

const PYTHON = '/usr/bin/python3'; // Debian's, with python3-grpcio (scripts/test installs it)
const IMAGE = 'sbx-test/node-h2-tls:latest';
const world = new World({ SBX_GATEWAY_TLS: '1', SBX_UPSTREAM_TIMEOUT_MS: '3000' });
const engine = process.env.SBX_GATEWAY_ENGINE === 'node' ? 'node' : 'nginx';
const scratch = mkdtempSync(join(tmpdir(), 'sbx-https-'));
let ca = '';
let gw = 0;
const others: World[] = [];

after(async () => {
  await world.cleanup();
  for (const w of others) await w.cleanup();
  await run('docker', ['image', 'rm', '-f', IMAGE]);
  rmSync(scratch, { recursive: true, force: true });
});

const url = (port: number, sandbox: string, path = '/') => `https://${port}-${sandbox}.sbx.localhost:${gw}${path}`;

before(async () => {
  const agent = await ensureAgentImage(new Runtime());
  const built = await run('docker', ['build', '-q', '-t', IMAGE, '-'], { input: `FROM ${agent}\nENTRYPOINT []\nCMD ["sleep", "infinity"]\n` });
  assert.equal(built.code, 0, built.stderr);
  await world.json(['create', '--name', 'web', '-p', '8000', '-p', '9000']);
  await world.json(['create', '--name', 'priv', '--private', '-p', '8000', '--', 'python3', '-m', 'http.server', '8000']);
  await world.json(['create', '--name', 'rpc', '--image', IMAGE, '-p', '50051', '-p', '50052']);
  await world.json(['port', 'expose', 'rpc', '50052', '--private']);
  await world.put('web', 'echo_server.py', '/srv/echo.py');
  await world.sbx(['exec', '-d', 'web', '--', 'python3', '/srv/echo.py', '8000']);
  await world.put('web', 'ws_echo.py', '/srv/ws.py');
  await world.sbx(['exec', '-d', 'web', '--', 'python3', '/srv/ws.py', '9000']);
  await world.put('rpc', 'grpc_server.js', '/tmp/grpc_server.js');
  await world.sbx(['exec', '-d', 'rpc', '--', 'node', '/tmp/grpc_server.js', '50051']);
  await world.sbx(['exec', '-d', 'rpc', '--', 'node', '/tmp/grpc_server.js', '50052']);
  ca = (await world.sbx(['ca'])).stdout.trim();
  gw = world.gatewayPort();
  await eventually(async () => (await curl(['--cacert', ca, url(8000, 'web')])).status === 200, 'the echo server');
});

describe('sbx ca', () => {
  it('prints the path of a CA made in this home, its key 0600, and how to trust it; installs nothing', async () => {
    const r = await world.sbx(['ca']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), join(world.home, 'tls', 'ca', 'sbx.localhost', 'ca.pem'));
    assert.match(readFileSync(r.stdout.trim(), 'utf8'), /^-----BEGIN CERTIFICATE-----/);
    assert.equal(statSync(join(world.home, 'tls', 'ca', 'sbx.localhost', 'ca-key.pem')).mode & 0o777, 0o600);
    for (const word of ['update-ca-certificates', 'certutil', 'Certificates.Install', 'NODE_EXTRA_CA_CERTS', 'REQUESTS_CA_BUNDLE', '--cacert']) assert.ok(r.stderr.includes(word), word);
    const j = await world.json(['ca']);
    assert.deepEqual(Object.keys(j).sort(), ['created', 'notAfter', 'path', 'sha256', 'subject', 'trust']);
    assert.equal(j.created, false, 'made once, then the same');
    assert.deepEqual(Object.keys(j.trust).sort(), ['chromium', 'curl', 'firefox', 'node', 'python', 'system']);
    const system = existsSync('/usr/local/share/ca-certificates') ? readdirSync('/usr/local/share/ca-certificates') : [];
    assert.ok(!system.some((f) => f.startsWith('sbx')), 'nothing in the system store');
  });
});

describe('HTTPS URLs', () => {
  it('URLs start with https://, and gateway status says tls', async () => {
    const ports = await world.json(['port', 'ls', 'web']);
    assert.equal(ports[0].url, url(8000, 'web'));
    const s = await world.json(['gateway', 'status']);
    assert.equal(s.tls, true);
    assert.equal(s.engine, engine);
    if (engine === 'nginx') {
      // nginx itself ends TLS and carries the public ports (the fast path), once it has the route.
      await eventually(async () => (findNginx() === BUILT_NGINX ? /listen \S+ ssl default_server[^;]*;\n\s+http2 on;/ : /listen \S+ ssl http2 default_server/).test(readFileSync(join(world.home, 'run', 'nginx.conf'), 'utf8')) && readFileSync(join(world.home, 'run', 'nginx.conf'), 'utf8').includes('"8000-web.sbx.localhost"'), 'nginx to carry the route over TLS', 5000);
    }
    assert.equal(s.url, `https://sbx.localhost:${gw}/`);
  });

  it('curl trusting the CA: HTTP/2 by ALPN and HTTP/1.1 on the same URL; the sandbox is told https', async () => {
    const h2 = await run('curl', ['-sS', '--cacert', ca, '-o', '/dev/null', '-w', '%{http_code} %{http_version}', url(8000, 'web')]);
    const h1 = await run('curl', ['-sS', '--cacert', ca, '--http1.1', '-o', '/dev/null', '-w', '%{http_code} %{http_version}', url(8000, 'web')]);
    assert.equal(h2.stdout, '200 2', h2.stderr);
    assert.equal(h1.stdout, '200 1.1', h1.stderr);
    const seen = JSON.parse((await curl(['--cacert', ca, url(8000, 'web', '/x')])).body);
    const proto = (seen.headers as [string, string][]).filter(([k]) => k.toLowerCase() === 'x-forwarded-proto').map(([, v]) => v);
    assert.deepEqual(proto, ['https']);
  });

  it('refused by the client: without the CA, with another home\'s CA, for a name the certificate does not cover', async () => {
    const none = await run('curl', ['-sS', '-o', '/dev/null', url(8000, 'web')]);
    assert.equal(none.code, 60, none.stderr);
    const other = new World();
    others.push(other);
    const otherCa = (await other.sbx(['ca'])).stdout.trim();
    const wrongCa = await run('curl', ['-sS', '--cacert', otherCa, '-o', '/dev/null', url(8000, 'web')]);
    assert.equal(wrongCa.code, 60, wrongCa.stderr);
    const wrongName = await run('curl', ['-sS', '--cacert', ca, '--resolve', `gateway.example.test:${gw}:127.0.0.1`, '-o', '/dev/null', `https://gateway.example.test:${gw}/`]);
    assert.equal(wrongName.code, 60, wrongName.stderr);
    assert.match(wrongName.stderr, /subject name|does not match/);
  });

  it('a private port: ?sbx_token= sets a Secure cookie; the header works; no token is 403', async () => {
    const token = (await world.json(['inspect', 'priv', '--show-token'])).token;
    await eventually(async () => (await curl(['--cacert', ca, '-H', `x-sbx-traffic-token: ${token}`, url(8000, 'priv')])).status === 200, 'the private port');
    const redirect = await curl(['--cacert', ca, url(8000, 'priv', `/?sbx_token=${token}`)]);
    assert.equal(redirect.status, 302);
    assert.match(redirect.headers['set-cookie'] ?? '', /^sbx_token=.*; HttpOnly; SameSite=Lax; Secure$/);
    assert.equal((await curl(['--cacert', ca, url(8000, 'priv')])).status, 403);
  });

  it('sbx fetch (HTTP/1.1 and --http2) and sbx port forward reach a private port through the HTTPS gateway, checking its certificate', async () => {
    const h1 = await world.sbx(['fetch', 'priv', '8000', '/', '-i']);
    assert.equal(h1.code, 0, h1.stderr);
    assert.match(h1.stdout, /^HTTP\/1\.1 200 /);
    const h2 = await world.sbx(['fetch', 'priv', '8000', '/', '-i', '--http2']);
    assert.equal(h2.code, 0, h2.stderr);
    assert.match(h2.stdout, /^HTTP\/2 200\n/);
    assert.match(h2.stdout, /Directory listing/);
    const { child, localPort } = await world.forward('priv', 8000);
    try {
      const r = await curl([`http://127.0.0.1:${localPort}/`]);
      assert.equal(r.status, 200);
      assert.match(r.body, /Directory listing/);
    } finally {
      child.kill();
    }
  });

  it('WebSocket over HTTPS (wss://), with Node trusting the CA through NODE_EXTRA_CA_CERTS', async () => {
    const script = `const ws = new WebSocket(${JSON.stringify(url(9000, 'web', '/chat').replace('https:', 'wss:'))}); const got = [];
ws.onopen = () => { ws.send('hello'); ws.send('world'); };
ws.onmessage = (e) => { got.push(String(e.data)); if (got.length === 2) { console.log(JSON.stringify(got)); ws.close(); } };
ws.onerror = (e) => { console.log('error ' + (e.message ?? e.error?.message)); process.exit(1); };`;
    let r = { code: 1, stdout: '', stderr: '' };
    for (let i = 0; i < 30 && r.code !== 0; i++) r = await run(process.execPath, ['-e', script], { env: { NODE_EXTRA_CA_CERTS: ca }, timeoutMs: 10_000 });
    assert.equal(r.stdout.trim(), '["echo: hello","echo: world"]', r.stdout + r.stderr);
    const untrusted = await run(process.execPath, ['-e', script], { env: { NODE_EXTRA_CA_CERTS: '' }, timeoutMs: 10_000 });
    assert.notEqual(untrusted.code, 0, 'control: without the CA the handshake is refused');
  });

  it('gRPC over TLS (HTTP/2 by ALPN) with a real client trusting the CA: public and private ports, unary, streams, deadline', async () => {
    const call = async (port: number, name: string, token = '') => {
      const r = await run(PYTHON, [join(ROOT, 'test', 'fixtures', 'grpc_client.py'), `127.0.0.1:${gw}`, `${port}-rpc.sbx.localhost:${gw}`, name, token], { env: { SBX_CA: ca }, timeoutMs: 30_000 });
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    };
    await eventually(async () => (await call(50051, 'unary')).ok === true, 'the gRPC server over TLS');
    const unary = await call(50051, 'unary');
    assert.equal(unary.reply, 'hello');
    assert.equal(unary.trailer, 'kept');
    assert.deepEqual((await call(50051, 'bidi')).replies, ['echo:x', 'echo:y', 'echo:z']);
    assert.deepEqual((await call(50051, 'server-stream')).replies, ['0', '1', '2', '3', '4']);
    assert.equal((await call(50051, 'deadline')).code, 'DEADLINE_EXCEEDED');
    // A private port goes through the Node gateway (nginx hands it on as HTTP/2 on its socket).
    const token = (await world.json(['inspect', 'rpc', '--show-token'])).token;
    assert.equal((await call(50052, 'unary')).code, 'UNAUTHENTICATED');
    const ok = await call(50052, 'unary', token);
    assert.equal(ok.ok, true, JSON.stringify(ok));
    assert.equal(ok.seen.token, null, 'the token stays at the gateway');
    // A public port (nginx's grpc_pass straight to the sandbox) strips the token as well.
    assert.equal((await call(50051, 'unary', token)).seen.token, null, 'no token reaches a public port');
    assert.deepEqual((await call(50052, 'bidi', token)).replies, ['echo:x', 'echo:y', 'echo:z']);
  });
});

/** Headless Chromium with a fresh profile and a fresh NSS store (HOME), trusting `caPath` when given: the page's DOM, and what it logged. */
async function chromium(target: string, caPath?: string): Promise<{ dom: string; log: string }> {
  const home = mkdtempSync(join(scratch, 'chromium-'));
  const nssdb = join(home, '.pki', 'nssdb');
  await run('mkdir', ['-p', nssdb]);
  assert.equal((await run('certutil', ['-d', `sql:${nssdb}`, '-N', '--empty-password'])).code, 0, 'certutil (libnss3-tools) makes the store');
  if (caPath) assert.equal((await run('certutil', ['-d', `sql:${nssdb}`, '-A', '-t', 'C,,', '-n', 'sbx-local-ca', '-i', caPath])).code, 0);
  const r = await run('chromium', ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', `--user-data-dir=${join(home, 'profile')}`, '--dump-dom', target], { env: { HOME: home }, timeoutMs: 60_000 });
  return { dom: r.stdout, log: r.stderr };
}

describe('headless Chromium', () => {
  it('loads an https sandbox URL when its profile trusts the CA (certutil, as sbx ca says), and refuses it otherwise', async () => {
    await world.json(['create', '--name', 'page', '-p', '3000', '--', 'python3', '-m', 'http.server', '3000']);
    const target = url(3000, 'page');
    await eventually(async () => (await curl(['--cacert', ca, target])).status === 200, 'the page');
    // An empty DOM is a browser that did not get to load (seen once in CI on a busy machine), not a
    // refusal: it gets one more try, and what Chromium logged goes with a failure.
    let trusted = await chromium(target, ca);
    if (trusted.dom.trim() === '') trusted = await chromium(target, ca);
    assert.match(trusted.dom, /Directory listing for \//, trusted.log.slice(-3000));
    const untrusted = await chromium(target);
    assert.doesNotMatch(untrusted.dom, /Directory listing/);
    // The page's error, or the handshake's own (-202 is ERR_CERT_AUTHORITY_INVALID): Chromium may
    // name the page's failure ERR_NETWORK_CHANGED instead when Docker changed a link meanwhile.
    assert.match(untrusted.log, /ERR_CERT_AUTHORITY_INVALID|handshake failed;.*net_error -202\b/);
  });
});

describe('a certificate of the user\'s own (SBX_TLS_CERT, SBX_TLS_KEY)', () => {
  it('is served and trusted through its own CA; an expired one is refused by the client', async () => {
    const day = 86_400_000;
    for (const [what, from, to, expect] of [
      ['valid', new Date(Date.now() - day), new Date(Date.now() + 30 * day), 0],
      ['expired', new Date(Date.now() - 30 * day), new Date(Date.now() - day), 60],
    ] as const) {
      const user = userCertificate(scratch, from, to);
      const w = new World({ SBX_GATEWAY_TLS: '1', SBX_TLS_CERT: user.cert, SBX_TLS_KEY: user.key });
      others.push(w);
      await w.json(['create', '--name', 'web', '-p', '8000', '--', 'python3', '-m', 'http.server', '8000']);
      const target = `https://8000-web.sbx.localhost:${w.gatewayPort()}/`;
      if (expect === 0) await eventually(async () => (await curl(['--cacert', user.caPath, target])).status === 200, 'the server');
      const r = await run('curl', ['-sS', '--cacert', user.caPath, '-o', '/dev/null', target]);
      assert.equal(r.code, expect, `${what}: ${r.stderr}`);
      if (expect) assert.match(r.stderr, /expired/);
      assert.match(readFileSync(join(w.home, 'gateway.log'), 'utf8'), /from SBX_TLS_CERT/);
      await w.sbx(['rm', '-f', 'web']);
      assert.ok(readdirSync(join(w.home, 'run', 'tls')).some((f) => f.startsWith('key-')), 'the gateway serves a checked copy of the key');
      await w.sbx(['gateway', 'stop']);
      assert.equal(existsSync(join(w.home, 'run', 'tls')), false, 'no copy of the key is left once the gateway stops');
    }
  });

  it('bad settings are refused with exit 2 and nothing made: a TLS switch that is not on/off, a certificate without its key', async () => {
    const w = new World({ SBX_GATEWAY_TLS: 'maybe' });
    others.push(w);
    const bad = await w.sbx(['create', '--name', 'nope', '-p', '8000']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /invalid SBX_GATEWAY_TLS "maybe": use 1/);
    assert.deepEqual(await w.json(['ls']), [], 'nothing made');
    const alone = await w.sbx(['gateway', 'start'], { env: { SBX_GATEWAY_TLS: '1', SBX_TLS_CERT: join(scratch, 'nothing.pem') } });
    assert.equal(alone.code, 2, alone.stderr);
    assert.match(alone.stderr, /SBX_TLS_CERT and SBX_TLS_KEY go together/);
    const unreadable = await w.sbx(['gateway', 'start'], { env: { SBX_GATEWAY_TLS: '1', SBX_TLS_CERT: join(scratch, 'nothing.pem'), SBX_TLS_KEY: join(scratch, 'nothing.key') } });
    assert.equal(unreadable.code, 2, unreadable.stderr);
    assert.match(unreadable.stderr, /SBX_TLS_CERT\/SBX_TLS_KEY cannot be read/);
    const suffix = await w.sbx(['gateway', 'start'], { env: { SBX_GATEWAY_TLS: '1', SBX_DOMAIN: 'co.uk' } });
    assert.equal(suffix.code, 2, suffix.stderr);
    assert.match(suffix.stderr, /SBX_DOMAIN "co\.uk" cannot have sbx's CA/);
    assert.equal(existsSync(join(w.home, 'tls', 'ca', 'co.uk')), false, 'no CA made for it');
  });
});
