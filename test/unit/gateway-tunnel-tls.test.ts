// HTTPS to the gateway through the agent's tunnel (src/api/through-gateway.ts openGateway): the
// certificate is checked against the CA the agent named, never taken unchecked. A local TLS
// server with a certificate from one sbx CA stands in for the gateway, and a socket to it for
// the tunnel (handed over paused, as DaemonClient.tunnel does).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { ensureCa, serverCertificate } from '../../src/api/ca.ts';
import { openGateway } from '../../src/api/through-gateway.ts';
import type { GatewayRoute } from '../../src/api/backend.ts';

const scratch = mkdtempSync(join(tmpdir(), 'sbx-tunnel-tls-'));
let server: Server;
let port = 0;
let rightCa = '';
let otherCa = '';
const opened: Duplex[] = [];

before(async () => {
  const gateway = await serverCertificate(join(scratch, 'agent'), 'sbx.localhost', {});
  rightCa = readFileSync(gateway.caPath!, 'utf8');
  otherCa = readFileSync((await ensureCa(join(scratch, 'other'), 'sbx.localhost')).path, 'utf8');
  server = createServer({ cert: gateway.cert, key: gateway.key, ALPNProtocols: ['h2', 'http/1.1'] }, (s) => s.end('hello'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
after(() => {
  for (const s of opened) s.destroy();
  server.close();
  rmSync(scratch, { recursive: true, force: true });
});

/** A route whose tunnel is a paused socket to the stand-in gateway. */
function route(tls: GatewayRoute['tls']): GatewayRoute {
  return {
    host: '203.0.113.1', // never dialled: the tunnel is the way
    port: 7070,
    domain: 'sbx.localhost',
    tls,
    connect: async () => {
      const s = connect(port, '127.0.0.1');
      s.pause();
      opened.push(s);
      return s;
    },
  };
}

/** The TLS handshake's outcome: the protocol agreed, or the error. */
function handshake(s: Duplex): Promise<string> {
  return new Promise((resolve) => {
    s.once('secureConnect', () => resolve(`ok ${(s as TLSSocket).alpnProtocol}`));
    s.once('error', (err: NodeJS.ErrnoException) => resolve(`error ${err.code}`));
  });
}

for (const alpn of [['http/1.1'], ['h2']]) {
  test(`${alpn[0]}: the agent's CA lets the handshake through (control); another CA, or none (the system's store), is refused`, async () => {
    assert.equal(await handshake(await openGateway(route({ caPem: rightCa }), '8080-web.sbx.localhost', alpn)), `ok ${alpn[0]}`);
    for (const tls of [{ caPem: otherCa }, {}]) {
      const verdict = await handshake(await openGateway(route(tls), '8080-web.sbx.localhost', alpn));
      assert.match(verdict, /^error (UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT_LOCALLY)$/, JSON.stringify(tls));
    }
  });
}

test('a name the certificate does not cover is refused, with the right CA', async () => {
  assert.equal(await handshake(await openGateway(route({ caPem: rightCa }), 'evil.example.test', ['http/1.1'])), 'error ERR_TLS_CERT_ALTNAME_INVALID');
});

test('a CA that is not PEM text is no CA: the handshake is refused', async () => {
  const verdict = await handshake(await openGateway(route({ caPem: 'not a certificate' }), '8080-web.sbx.localhost', ['http/1.1']));
  assert.match(verdict, /^error /);
});

test('a CA of the wrong type (an odd agent) makes openGateway fail, and the tunnel is closed, not left open', async () => {
  const before = opened.length;
  await assert.rejects(openGateway(route({ caPem: 42 as unknown as string }), '8080-web.sbx.localhost', ['http/1.1']));
  assert.equal(opened[before]!.destroyed, true);
});
