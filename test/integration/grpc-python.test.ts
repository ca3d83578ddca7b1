// A Python gRPC server (Debian's python3-grpcio, installed offline into a test image built from
// sbx's default image) in a sandbox, called by a real gRPC client on the host through every gateway
// path: the Node gateway over plaintext h2c, the gateway's nginx 1.26 taking plaintext h2c on its
// own port (the default), Debian's nginx 1.22 behind the HAProxy front, and nginx ending TLS
// (grpc_pass in every nginx path). Public
// and private ports, the four kinds of call, deadlines and cancellation.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_IMAGE } from '../../src/api/local-sbx.ts';
import { buildDebImage } from '../deb-image.ts';
import { eventually, ROOT, run, World } from '../helpers.ts';

const PYTHON = '/usr/bin/python3'; // Debian's, with python3-grpcio (scripts/test installs it)
const IMAGE = 'sbx-test/py-grpc:latest';

before(async () => {
  assert.ok(existsSync(PYTHON), 'Debian python3 with python3-grpcio (scripts/test installs it)');
  await buildDebImage(IMAGE, DEFAULT_IMAGE, ['python3-grpcio']);
});

after(async () => {
  await run('docker', ['image', 'rm', '-f', IMAGE]);
});

const paths = [
  { name: 'the Node gateway, plaintext h2c', env: { SBX_GATEWAY_ENGINE: 'node' } },
  { name: 'the gateway\'s nginx 1.26 alone, plaintext h2c (grpc_pass)', env: { SBX_GATEWAY_H2C: '1', SBX_HAPROXY: '/nonexistent/haproxy' } },
  { name: 'Debian\'s nginx behind the h2c front (HAProxy), plaintext h2c (grpc_pass)', env: { SBX_GATEWAY_H2C: '1', SBX_NGINX: '/usr/sbin/nginx' } },
  { name: 'the gateway\'s nginx ending TLS (grpc_pass)', env: { SBX_GATEWAY_TLS: '1' } },
];

for (const path of paths) {
  describe(`a Python gRPC server through ${path.name}`, () => {
    const world = new World({ ...path.env, SBX_UPSTREAM_TIMEOUT_MS: '3000' });
    let gw = 0;
    let token = '';
    let ca = '';
    const pub = '50051-rpc.sbx.localhost';
    const priv = '50052-rpc.sbx.localhost';

    /** One call of the gRPC client (test/fixtures/grpc_client.py): its JSON line. */
    async function grpc(host: string, call: string, tok = ''): Promise<any> {
      const r = await run(PYTHON, [join(ROOT, 'test', 'fixtures', 'grpc_client.py'), `127.0.0.1:${gw}`, `${host}:${gw}`, call, tok], { timeoutMs: 30_000, env: ca ? { SBX_CA: ca } : {} });
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(r.stdout);
    }
    const waitEnded = async () => (await world.sbx(['exec', 'rpc', '--', 'cat', '/tmp/wait-ended'])).stdout;

    before(async () => {
      await world.json(['create', '--name', 'rpc', '--image', IMAGE, '-p', '50051', '-p', '50052', '--private', '--', 'sleep', 'infinity']);
      await world.put('rpc', 'grpc_server.py', '/tmp/grpc_server.py');
      for (const port of [50051, 50052]) {
        const r = await world.sbx(['exec', '-d', 'rpc', '--', 'python3', '/tmp/grpc_server.py', String(port)]);
        assert.equal(r.code, 0, r.stderr);
      }
      await world.json(['port', 'expose', 'rpc', '50051', '--public']);
      token = (await world.json(['inspect', 'rpc', '--show-token'])).token;
      gw = world.gatewayPort();
      if (path.env.SBX_GATEWAY_TLS) ca = (await world.sbx(['ca'])).stdout.trim();
      await eventually(async () => (await grpc(pub, 'unary')).ok === true, 'the gRPC server');
    });

    after(() => world.cleanup());

    it('a unary call to a public port: the reply and the trailers', async () => {
      const r = await grpc(pub, 'unary');
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.reply, 'hello');
      assert.equal(r.seen.server, 'python');
      assert.equal(r.trailer, 'kept', 'trailers reach the client');
    });

    it('attack: the sandbox behind a public port never sees the token a client sends it (it would open the private ports)', async () => {
      const r = await grpc(pub, 'unary', token);
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.seen.token, null, 'the token stays at the gateway');
    });

    it('a server stream, a client stream and a bidirectional stream (each reply before the next message)', async () => {
      assert.deepEqual((await grpc(pub, 'server-stream')).replies, ['0', '1', '2', '3', '4']);
      assert.equal((await grpc(pub, 'client-stream')).reply, 'a,b,c');
      assert.deepEqual((await grpc(pub, 'bidi')).replies, ['echo:x', 'echo:y', 'echo:z']);
    });

    it('a deadline reaches the server and ends the call in time', async () => {
      await world.sbx(['exec', 'rpc', '--', 'rm', '-f', '/tmp/wait-ended']);
      const r = await grpc(pub, 'deadline');
      assert.equal(r.code, 'DEADLINE_EXCEEDED');
      assert.ok(r.seconds < 3.5, `${r.seconds} s`);
      let ended: { cancelled: boolean; deadline: number | null } = { cancelled: false, deadline: null };
      await eventually(async () => {
        const text = await waitEnded();
        if (!text) return false;
        ended = JSON.parse(text);
        return true;
      }, 'the server to see the call end');
      assert.ok(ended.deadline !== null && ended.deadline <= 2.0, `the server's deadline: ${JSON.stringify(ended)}`);
    });

    it('a cancelled call ends on the server too', async () => {
      await world.sbx(['exec', 'rpc', '--', 'rm', '-f', '/tmp/wait-ended']);
      assert.equal((await grpc(pub, 'cancel')).code, 'CANCELLED');
      // The call had 30 s: it ended at once because the cancel reached the server.
      await eventually(async () => /"cancelled": true, "deadline": (2\d|30)/.test(await waitEnded()), 'the cancel to reach the server', 10_000);
    });

    it('a private port: no token or a wrong one is UNAUTHENTICATED; the token in metadata passes and never reaches the sandbox', async () => {
      const none = await grpc(priv, 'unary');
      assert.equal(none.code, 'UNAUTHENTICATED', JSON.stringify(none));
      assert.equal((await grpc(priv, 'unary', 'W'.repeat(32))).code, 'UNAUTHENTICATED');
      const ok = await grpc(priv, 'unary', token);
      assert.equal(ok.ok, true, JSON.stringify(ok));
      assert.equal(ok.seen.server, 'python');
      assert.equal(ok.seen.token, null, 'the token stays at the gateway');
      assert.deepEqual((await grpc(priv, 'bidi', token)).replies, ['echo:x', 'echo:y', 'echo:z']);
    });

    it('a sandbox\'s X-Accel-Redirect and X-Accel-Limit-Rate in a gRPC answer are not obeyed', async () => {
      const r = await grpc(pub, 'accel');
      assert.equal(r.ok, true, JSON.stringify(r));
      assert.equal(r.size, 20000, 'the answer itself, not an internal redirect');
      assert.ok(r.seconds < 3, `${r.seconds} s: slowed to 1 byte/s`);
    });

    it('a port not exposed and a sandbox that does not exist are NOT_FOUND', async () => {
      assert.equal((await grpc('50099-rpc.sbx.localhost', 'unary')).code, 'NOT_FOUND');
      assert.equal((await grpc('50051-nosuch.sbx.localhost', 'unary')).code, 'NOT_FOUND');
    });
  });
}
