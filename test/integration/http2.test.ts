// HTTP/2 and gRPC through sandbox URLs, driven with real clients: curl (HTTP/1.1 and
// --http2-prior-knowledge on one port) and a real gRPC client (Debian's python3-grpcio) against a
// gRPC server over h2c in a sandbox (test/fixtures/grpc_server.js, on the agent image's Node).
// The Node gateway owns the listener here (SBX_GATEWAY_ENGINE=node); h2c-native.test.ts has the
// nginx engine, where nginx 1.26 tells h2c from HTTP/1.1 itself, and h2c-front.test.ts Debian's
// nginx behind HAProxy's front (README, "HTTP/2 and gRPC").
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { connect, constants } from 'node:http2';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { ensureAgentImage } from '../../src/api/agent-image.ts';
import { Runtime } from '../../src/runtime/docker.ts';
import { curl, eventually, ROOT, run, sleep, World } from '../helpers.ts';

const PYTHON = '/usr/bin/python3'; // Debian's, with python3-grpcio (scripts/test installs it)
const IMAGE = 'sbx-test/node-h2:latest';
const world = new World({ SBX_GATEWAY_ENGINE: 'node', SBX_UPSTREAM_TIMEOUT_MS: '3000' });
let gw = 0;
let token = '';

after(async () => {
  await world.cleanup();
  await run('docker', ['image', 'rm', '-f', IMAGE]);
});

/** One call of the gRPC client: its JSON line. */
async function grpc(host: string, call: string, tok = ''): Promise<any> {
  const r = await run(PYTHON, [join(ROOT, 'test', 'fixtures', 'grpc_client.py'), `127.0.0.1:${gw}`, `${host}:${gw}`, call, tok], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

before(async () => {
  assert.ok(existsSync(PYTHON), 'Debian python3 with python3-grpcio (scripts/test installs it)');
  // The agent image has Node; without its entrypoint (sbx itself), it runs what it is given.
  const agent = await ensureAgentImage(new Runtime());
  const built = await run('docker', ['build', '-q', '-t', IMAGE, '-'], { input: `FROM ${agent}\nENTRYPOINT []\nCMD ["sleep", "infinity"]\n` });
  assert.equal(built.code, 0, built.stderr);
  await world.json(['create', '--name', 'web', '-p', '8000', '--', 'python3', '-m', 'http.server', '8000']);
  await world.json(['create', '--name', 'rpc', '--image', IMAGE, '-p', '50051', '-p', '50052', '--private']);
  await world.put('rpc', 'grpc_server.js', '/tmp/grpc_server.js');
  for (const port of [50051, 50052]) {
    const r = await world.sbx(['exec', '-d', 'rpc', '--', 'node', '/tmp/grpc_server.js', String(port)]);
    assert.equal(r.code, 0, r.stderr);
  }
  await world.json(['port', 'expose', 'rpc', '50051', '--public']);
  await world.json(['port', 'expose', 'web', '8100']);
  await world.put('web', 'bad_h1.py', '/tmp/bad_h1.py');
  assert.equal((await world.sbx(['exec', '-d', 'web', '--', 'python3', '/tmp/bad_h1.py', '8100'])).code, 0);
  token = (await world.json(['inspect', 'rpc', '--show-token'])).token;
  gw = world.gatewayPort();
  await eventually(async () => (await curl([world.url(8000, 'web')])).status === 200, 'the HTTP/1.1 server');
  await eventually(async () => (await grpc(`50051-rpc.sbx.localhost`, 'unary')).ok === true, 'the gRPC server');
});

describe('HTTP/1.1 and HTTP/2 on one listener', () => {
  it('plain curl gets HTTP/1.1 and curl --http2-prior-knowledge gets HTTP/2, from the same URL', async () => {
    const url = world.url(8000, 'web');
    const h1 = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{http_version}', url]);
    const h2 = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{http_version}', '--http2-prior-knowledge', url]);
    assert.equal(h1.stdout, '200 1.1');
    assert.equal(h2.stdout, '200 2', 'an HTTP/1.1-only server behind it: the request goes to it as HTTP/1.1');
    assert.match((await curl(['--http2-prior-knowledge', url])).body, /Directory listing/);
  });

  it('sbx fetch --http2 sends its request as HTTP/2 (to a private port, with the token)', async () => {
    const r = await world.sbx(['fetch', 'rpc', '50052', '/sbx.test.Echo/Nope', '-i', '--http2', '-X', 'POST', '-H', 'content-type: application/grpc']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^HTTP\/2 200\n/);
    assert.match(r.stdout, /grpc-status: 12/, 'the sandbox answered (UNIMPLEMENTED): the token passed');
  });

  it('the gateway answers HTTP/2 as it answers HTTP/1.1: 404 for a port not exposed, 403 without the token', async () => {
    const r = await curl(['--http2-prior-knowledge', '-H', 'Accept: application/json', world.url(9999, 'web')]);
    assert.equal(r.status, 404);
    assert.equal(JSON.parse(r.body).error.code, 'port_not_exposed');
    const p = await curl(['--http2-prior-knowledge', world.url(50052, 'rpc')]);
    assert.equal(p.status, 403);
    assert.equal(p.headers['x-sbx-error'], 'token_missing');
  });
});

describe('gRPC through a sandbox URL (h2c to the sandbox)', () => {
  const host = '50051-rpc.sbx.localhost';

  it('a unary call: the reply, the trailers, and the URL as :authority', async () => {
    const r = await grpc(host, 'unary');
    assert.equal(r.ok, true, JSON.stringify(r));
    assert.equal(r.reply, 'hello');
    assert.equal(r.trailer, 'kept', 'trailers reach the client');
    assert.equal(r.seen.authority, `${host}:${gw}`);
    assert.equal(r.seen.te, 'trailers');
  });

  it('a server stream, a client stream and a bidirectional stream (each reply before the next message)', async () => {
    assert.deepEqual((await grpc(host, 'server-stream')).replies, ['0', '1', '2', '3', '4']);
    assert.equal((await grpc(host, 'client-stream')).reply, 'a,b,c');
    assert.deepEqual((await grpc(host, 'bidi')).replies, ['echo:x', 'echo:y', 'echo:z']);
  });

  it('a deadline reaches the server (grpc-timeout) and ends the call in time', async () => {
    // The server answers first (the call must reach it before its deadline for it to see the end).
    await eventually(async () => (await grpc(host, 'unary')).ok === true, 'the gRPC server');
    const r = await grpc(host, 'deadline');
    assert.equal(r.code, 'DEADLINE_EXCEEDED');
    assert.ok(r.seconds < 3.5, `${r.seconds} s`);
    await eventually(async () => /"timeout":"\d+[HMSmun]"/.test((await world.sbx(['exec', 'rpc', '--', 'cat', '/tmp/wait-ended'])).stdout), 'the server to see the call end');
  });

  it('calls reset at once, while the gateway is still reaching the sandbox: none is left open there (each call the sandbox saw has ended)', async () => {
    // The client's reset could come while the gateway awaited its session to the sandbox: the
    // stream's close had fired by then, and the call the gateway opened after it stayed open.
    await world.sbx(['exec', 'rpc', '--', 'rm', '-f', '/tmp/wait-log']);
    const session = connect(`http://127.0.0.1:${gw}`);
    session.on('error', () => {});
    for (let i = 0; i < 40; i++) {
      const req = session.request({ ':method': 'POST', ':path': '/sbx.test.Echo/Wait', ':authority': `${host}:${gw}`, 'content-type': 'application/grpc', te: 'trailers' });
      req.on('error', () => {});
      req.close(constants.NGHTTP2_CANCEL);
    }
    // Control: the same session still carries a call that is not reset.
    const control = session.request({ ':method': 'POST', ':path': '/sbx.test.Echo/Wait', ':authority': `${host}:${gw}`, 'content-type': 'application/grpc', te: 'trailers' });
    control.on('error', () => {});
    await eventually(async () => /start/.test((await world.sbx(['exec', 'rpc', '--', 'cat', '/tmp/wait-log'])).stdout), 'a call to reach the sandbox');
    control.close(constants.NGHTTP2_CANCEL);
    await sleep(1500);
    session.close();
    const log = (await world.sbx(['exec', 'rpc', '--', 'cat', '/tmp/wait-log'])).stdout;
    const count = (word: string) => log.split('\n').filter((l) => l === word).length;
    assert.ok(count('start') >= 1, log);
    assert.equal(count('end'), count('start'), `calls the sandbox saw: ${count('start')}, ended: ${count('end')}`);
  });

  it('a cancelled call is reset on the sandbox side too (CANCEL)', async () => {
    await world.sbx(['exec', 'rpc', '--', 'rm', '-f', '/tmp/wait-ended']);
    assert.equal((await grpc(host, 'cancel')).code, 'CANCELLED');
    await eventually(async () => /"rstCode":8,/.test((await world.sbx(['exec', 'rpc', '--', 'cat', '/tmp/wait-ended'])).stdout), 'the reset to reach the server');
  });

  it('a private port: no token or a wrong one is UNAUTHENTICATED; the token in metadata passes and never reaches the sandbox', async () => {
    const priv = '50052-rpc.sbx.localhost';
    const none = await grpc(priv, 'unary');
    assert.equal(none.code, 'UNAUTHENTICATED');
    assert.match(none.details, /port 50052 of sandbox rpc is private/);
    assert.equal((await grpc(priv, 'unary', 'W'.repeat(32))).code, 'UNAUTHENTICATED');
    const ok = await grpc(priv, 'unary', token);
    assert.equal(ok.ok, true, JSON.stringify(ok));
    assert.equal(ok.seen.token, null, 'the token stays at the gateway');
    assert.equal((await grpc(priv, 'bidi', token)).replies.length, 3);
  });

  it('a port not exposed is NOT_FOUND, a sandbox that does not exist too', async () => {
    assert.equal((await grpc('50099-rpc.sbx.localhost', 'unary')).code, 'NOT_FOUND');
    assert.equal((await grpc('50051-nosuch.sbx.localhost', 'unary')).code, 'NOT_FOUND');
  });
});

/** One HTTP/2 request with Node's client: status (0 when reset) and body. */
function h2get(authority: string, path: string): Promise<{ status: number; body: string; error?: string }> {
  return new Promise((resolve) => {
    const session = connect(`http://127.0.0.1:${gw}`);
    session.on('error', (err) => resolve({ status: 0, body: '', error: err.message }));
    const s = session.request({ ':path': path, ':authority': authority });
    let status = 0;
    let body = '';
    s.on('response', (h) => (status = Number(h[':status'])));
    s.on('data', (d) => (body += d));
    s.on('error', (err) => resolve({ status, body, error: err.message }));
    s.on('close', () => {
      session.close();
      resolve({ status, body });
    });
  });
}

const gatewayPid = () => JSON.parse(readFileSync(join(world.home, 'gateway.json'), 'utf8')).pid as number;

describe('attacks on the HTTP/2 path: the gateway stays up and refuses', () => {
  it('a sandbox answering what HTTP/2 cannot carry (status 999, an HTTP2-Settings header) gets its client a 502 or a reset, not a crash', async () => {
    const pid = gatewayPid();
    await eventually(async () => (await h2get(`8100-web.sbx.localhost:${gw}`, '/')).status === 200, 'the odd server');
    const odd = await h2get(`8100-web.sbx.localhost:${gw}`, '/status999');
    assert.equal(odd.status, 502, JSON.stringify(odd));
    const settings = await h2get(`8100-web.sbx.localhost:${gw}`, '/h2settings');
    assert.ok(settings.status === 200 || settings.status === 0, JSON.stringify(settings));
    assert.equal(gatewayPid(), pid);
    assert.equal((await h2get(`8000-web.sbx.localhost:${gw}`, '/')).status, 200, 'control: the gateway still serves');
  });

  it('a sandbox that pushes and then ends its session with an error: refused, and the next call works', async () => {
    const pid = gatewayPid();
    const r = await run(PYTHON, ['-c', `import grpc; ch = grpc.insecure_channel('127.0.0.1:${gw}', options=[('grpc.default_authority', '50051-rpc.sbx.localhost:${gw}')]);\ntry:\n  print(ch.unary_unary('/sbx.test.Echo/Push')(b'', timeout=5))\nexcept grpc.RpcError as e:\n  print(e.code().name)`]);
    assert.equal(r.code, 0, r.stderr);
    await new Promise((res) => setTimeout(res, 300));
    assert.equal((await grpc('50051-rpc.sbx.localhost', 'unary')).ok, true, 'control: a new session to the sandbox');
    assert.equal(gatewayPid(), pid);
  });

  it('clients resetting their streams at once (CANCEL and INTERNAL_ERROR), to HTTP/2 and HTTP/1.1 ports, 200 times: no crash', async () => {
    const pid = gatewayPid();
    const session = connect(`http://127.0.0.1:${gw}`);
    session.on('error', () => {});
    for (let i = 0; i < 200; i++) {
      const authority = i % 2 ? `50051-rpc.sbx.localhost:${gw}` : `8000-web.sbx.localhost:${gw}`;
      const s = session.request({ ':method': 'POST', ':path': i % 2 ? '/sbx.test.Echo/Wait' : '/', ':authority': authority, 'content-type': 'application/grpc', te: 'trailers' });
      s.on('error', () => {});
      if (i % 3) setImmediate(() => s.close(i % 4 ? constants.NGHTTP2_CANCEL : constants.NGHTTP2_INTERNAL_ERROR));
      else s.close(constants.NGHTTP2_INTERNAL_ERROR);
    }
    await new Promise((res) => setTimeout(res, 1500));
    session.destroy();
    assert.equal(gatewayPid(), pid);
    assert.equal((await grpc('50051-rpc.sbx.localhost', 'unary')).ok, true, 'control');
  });

  it('one connection may have 100 streams at once (each may be a connection into a sandbox)', async () => {
    const session = connect(`http://127.0.0.1:${gw}`);
    const settings = await new Promise<any>((resolve, reject) => {
      session.once('remoteSettings', resolve);
      session.once('error', reject);
    });
    session.destroy();
    assert.equal(settings.maxConcurrentStreams, 100);
  });
});

describe('the gateway stops with HTTP/2 connections open', () => {
  it('an idle h2c connection and one that sent half a preface do not hold up gateway stop', async () => {
    const idle = connect(`http://127.0.0.1:${gw}`);
    idle.on('error', () => {});
    await new Promise((r) => idle.once('remoteSettings', r));
    const half = createConnection(gw, '127.0.0.1');
    half.on('error', () => {});
    await new Promise((r) => half.once('connect', r));
    half.write('PRI * HTTP/2.0\r\n');
    const started = Date.now();
    const r = await world.sbx(['gateway', 'stop']);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Date.now() - started < 8000, `stopped in ${Date.now() - started} ms`);
    idle.destroy();
    half.destroy();
  });
});
