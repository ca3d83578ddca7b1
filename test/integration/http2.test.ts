// HTTP/2 and gRPC through sandbox URLs, driven with real clients: curl (HTTP/1.1 and
// --http2-prior-knowledge on one port) and a real gRPC client (Debian's python3-grpcio) against a
// gRPC server over h2c in a sandbox (test/fixtures/grpc_server.js, on the agent image's Node).
// The Node gateway owns the listener here (SBX_GATEWAY_ENGINE=node): nginx 1.22, the fast path,
// cannot tell h2c from HTTP/1.1 on one plaintext port (README, "HTTP/2 and gRPC").
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ensureAgentImage } from '../../src/api/agent-image.ts';
import { Runtime } from '../../src/runtime/docker.ts';
import { curl, eventually, ROOT, run, World } from '../helpers.ts';

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
    const r = await grpc(host, 'deadline');
    assert.equal(r.code, 'DEADLINE_EXCEEDED');
    assert.ok(r.seconds < 2.5, `${r.seconds} s`);
    await eventually(async () => /"timeout":"\d+[mu]"/.test((await world.sbx(['exec', 'rpc', '--', 'cat', '/tmp/wait-ended'])).stdout), 'the server to see the call end');
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
