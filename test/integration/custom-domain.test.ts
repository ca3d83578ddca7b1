// `sbx port expose --domain NAME`: a name of the user's own routed to one port of a sandbox, through
// both gateway engines, driven with curl (the name resolved to the gateway with --resolve, as the
// user's DNS would); over HTTPS only when the gateway's certificate covers the name.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { curl, eventually, oneErrorLine, World } from '../helpers.ts';
import { userCertificate } from '../user-cert.ts';
import { closeMode, modeWorld, onlyAs } from '../test-mode.ts';

const NAME = 'app.example.test';
const scratch = mkdtempSync(join(tmpdir(), 'sbx-domain-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** curl of http(s)://<name>:<gateway port><path>, the name resolved to the gateway. */
function viaName(w: World, name: string, path = '/', extra: string[] = [], scheme = 'http') {
  const port = w.gatewayPort();
  return curl(['--resolve', `${name}:${port}:127.0.0.1`, ...extra, `${scheme}://${name}:${port}${path}`]);
}

for (const engine of ['nginx', 'node'] as const) {
  describe(`port expose --domain (${engine} engine)`, () => {
    let world: World;
    before(async () => {
      world = await modeWorld(engine === 'node' ? { SBX_GATEWAY_ENGINE: 'node' } : {});
    });
    after(async () => {
      try {
        await world?.cleanup();
      } finally {
        await closeMode();
      }
    });

    it('routes the name to the port; the JSON has the name\'s URL and the domain; the sbx URL still works', async () => {
      await world.json(['create', '--name', 'web', '--', 'python3', '-m', 'http.server', '8000']);
      const ports = await world.json<any[]>(['port', 'expose', 'web', '8000', '--domain', NAME]);
      assert.deepEqual(ports, [{ port: 8000, url: `http://${NAME}:${world.gatewayPort()}/`, public: true, domain: NAME }]);
      await eventually(async () => (await viaName(world, NAME)).status === 200, 'the server through the name');
      assert.match((await viaName(world, NAME)).body, /Directory listing/);
      // nginx carries the name itself (its fast path), not only through the Node gateway behind it.
      const home = await world.labelHome(); // the agent's, behind one
      if (engine === 'nginx') await eventually(async () => readFileSync(join(home, 'run', 'nginx.conf'), 'utf8').includes(`"${NAME}" `), 'the name in nginx\'s map');
      assert.equal((await curl([world.url(8000, 'web')])).status, 200);
      assert.deepEqual(await world.json(['port', 'ls', 'web']), ports);
      assert.deepEqual((await world.json(['inspect', 'web'])).ports, ports);
      // Upper case and a final dot are the same name: exposing it again changes nothing.
      assert.deepEqual(await world.json(['port', 'expose', 'web', '8000', '--domain', 'App.Example.TEST.']), ports);
    });

    it('a private port behind the name wants the token; exposing again without --domain keeps the name', async () => {
      const ports = await world.json<any[]>(['port', 'expose', 'web', '8000', '--private']);
      assert.equal(ports[0].domain, NAME);
      assert.equal(ports[0].public, false);
      await eventually(async () => (await viaName(world, NAME)).status === 403, 'the port to turn private');
      const token = (await world.json(['inspect', 'web', '--show-token'])).token;
      assert.equal((await viaName(world, NAME, '/', ['-H', `x-sbx-traffic-token: ${token}`])).status, 200);
      await world.json(['port', 'expose', 'web', '8000', '--public']);
    });

    it('a name that routes elsewhere is refused (exit 2), and nothing of the refused command is left', async () => {
      await world.json(['create', '--name', 'other', '--', 'python3', '-m', 'http.server', '8000']);
      const taken = await world.sbx(['port', 'expose', 'other', '8000', '--domain', NAME]);
      assert.equal(taken.code, 2);
      assert.match(oneErrorLine(taken), /domain app\.example\.test already routes to port 8000 of sandbox web: sbx port rm web 8000 first/);
      assert.deepEqual(await world.json(['port', 'ls', 'other']), []);
      const another = await world.sbx(['port', 'expose', 'web', '8001', '--domain', NAME]);
      assert.equal(another.code, 2, 'another port of the same sandbox');
    });

    it('bad names, several ports and an unknown sandbox are refused with one line and their exit code', async () => {
      for (const bad of ['bad_name.test', 'single', '1.2.3.4', 'x.sbx.localhost', 'sbx.localhost', '*.example.test', '-a.test', `${'a'.repeat(64)}.test`, 'sbx-gateway-control.invalid']) {
        const r = await world.sbx(['port', 'expose', 'web', '8000', '--domain', bad]);
        assert.equal(r.code, 2, bad);
        assert.match(oneErrorLine(r), /invalid domain/, bad);
      }
      const two = await world.sbx(['port', 'expose', 'web', '8000', '8001', '--domain', 'two.example.test']);
      assert.equal(two.code, 2);
      assert.match(oneErrorLine(two), /--domain names one port: got 2 \(8000, 8001\)/);
      const none = await world.sbx(['port', 'expose', 'nosuch', '8000', '--domain', 'x.example.test']);
      assert.equal(none.code, 3, none.stderr);
      assert.deepEqual((await world.json<any[]>(['port', 'ls', 'web'])).map((p) => p.port), [8000]);
    });

    it('an unknown name gets 404; port rm stops the name and frees it for another sandbox', async () => {
      assert.equal((await viaName(world, 'nothing.example.test')).status, 404);
      await world.json(['port', 'rm', 'web', '8000']);
      assert.equal((await viaName(world, NAME)).status, 404, 'routing stops when port rm returns');
      const moved = await world.json<any[]>(['port', 'expose', 'other', '8000', '--domain', NAME]);
      assert.equal(moved[0].domain, NAME);
      await eventually(async () => (await viaName(world, NAME)).status === 200, 'the name on the other sandbox');
    });
  });
}

describe('port expose --domain on an HTTPS gateway', () => {
  const worlds: World[] = [];
  after(async () => {
    try {
      for (const w of worlds) await w.cleanup();
    } finally {
      await closeMode();
    }
  });

  it('with sbx\'s CA (which signs only under SBX_DOMAIN) the name is refused, and no port is exposed', async () => {
    const w = await modeWorld({ SBX_GATEWAY_TLS: '1' });
    worlds.push(w);
    await w.json(['create', '--name', 'web', '--', 'python3', '-m', 'http.server', '8000']);
    const r = await w.sbx(['port', 'expose', 'web', '8000', '--domain', NAME]);
    assert.equal(r.code, 2);
    assert.match(oneErrorLine(r), /sbx's CA, which signs only for names under sbx\.localhost .*SBX_TLS_CERT/);
    assert.deepEqual(await w.json(['port', 'ls', 'web']), []);
  });

  it('with a certificate of the user\'s own that covers the name it is served over HTTPS; one it does not cover is refused', async (t) => {
    if (onlyAs(t, ['root'], 'SBX_TLS_CERT names files on the client, which the agent does not serve (agent.test.ts: exit 2)')) return;
    const day = 86_400_000;
    const user = userCertificate(scratch, new Date(Date.now() - day), new Date(Date.now() + 30 * day), ['*.sbx.localhost', NAME]);
    const w = new World({ SBX_GATEWAY_TLS: '1', SBX_TLS_CERT: user.cert, SBX_TLS_KEY: user.key });
    worlds.push(w);
    await w.json(['create', '--name', 'web', '--', 'python3', '-m', 'http.server', '8000']);
    const ports = await w.json<any[]>(['port', 'expose', 'web', '8000', '--domain', NAME]);
    assert.equal(ports[0].url, `https://${NAME}:${w.gatewayPort()}/`);
    await eventually(async () => (await viaName(w, NAME, '/', ['--cacert', user.caPath], 'https')).status === 200, 'the server over HTTPS');
    const h2 = await viaName(w, NAME, '/', ['--cacert', user.caPath, '--http2', '-o', '/dev/null', '-w', '%{http_version}'], 'https');
    assert.equal(h2.body, '2');
    const uncovered = await w.sbx(['port', 'expose', 'web', '8001', '--domain', 'other.example.test']);
    assert.equal(uncovered.code, 2);
    assert.match(oneErrorLine(uncovered), /the gateway's certificate \(SBX_TLS_CERT, as the gateway serves it now; its log says when it refused a renewal\) does not cover it/);
  });
});
