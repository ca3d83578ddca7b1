// Attacks on the gateway's own surfaces, each beside the control that must keep working. The
// adversaries are the code in sandboxes and the pages they serve: curl and Node's http client
// play the user's browser, with the headers a browser sends (Cookie, Origin, Sec-Fetch-*), from a
// page of the sandbox "evil" against the private ports of the sandbox "victim". Both engines.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { PROTOCOL_VERSION } from '../../src/daemon-client/protocol.ts';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { curl, eventually, World } from '../helpers.ts';

/** An upgrade request (WebSocket unless `upgrade` says otherwise): the status it got, and x-sbx-error. */
function upgrade(gwPort: number, host: string, path: string, headers: Record<string, string>, kind = 'websocket'): Promise<{ status: number; code?: string }> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1',
      port: gwPort,
      path,
      headers: { host, connection: 'Upgrade', upgrade: kind, 'sec-websocket-version': '13', 'sec-websocket-key': randomBytes(16).toString('base64'), ...headers },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode ?? 0 });
    });
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, code: res.headers['x-sbx-error'] as string | undefined });
    });
    req.on('error', reject);
    req.end();
  });
}

/** One JSON-lines request on the daemon's control socket. */
function control(home: string, op: string, version: number | null = PROTOCOL_VERSION): Promise<any> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(join(home, 'run', 'control.sock'));
    let text = '';
    conn.setEncoding('utf8');
    conn.on('data', (d: string) => (text += d));
    conn.on('end', () => resolve(JSON.parse(text)));
    conn.on('error', reject);
    conn.write(JSON.stringify({ ...(version === null ? {} : { v: version }), op, payload: {} }) + '\n');
  });
}

/** A header as the sandbox's echo server received it (undefined: not sent). */
function seenHeader(body: string, name: string): string | undefined {
  const found = (JSON.parse(body).headers as string[][]).find(([k]) => k!.toLowerCase() === name);
  return found?.[1];
}

for (const [engine, env] of [['nginx', {}], ['node', { SBX_GATEWAY_ENGINE: 'node' }]] as const) {
  describe(`the ${engine} engine`, () => {
    const world = new World({ ...env });
    after(() => world.cleanup());
    let gw: number;
    let token: string;
    /** The private echo server of victim, and its own origin. */
    let victim: string;
    let victimOrigin: string;
    /** A page of evil (a public port): where the attacks come from. */
    let evil: string;
    let evilOrigin: string;
    const withToken = (t: string) => ['-H', `x-sbx-traffic-token: ${t}`];

    before(async () => {
      await world.json(['create', '--name', 'victim']);
      await world.put('victim', 'echo_server.py', '/srv/echo.py');
      await world.put('victim', 'ws_echo.py', '/srv/ws.py');
      await world.sbx(['exec', '-d', 'victim', '--', 'python3', '/srv/echo.py', '8000']);
      await world.sbx(['exec', '-d', 'victim', '--', 'python3', '/srv/ws.py', '9000']);
      await world.json(['port', 'expose', 'victim', '8000', '9000', '--private']);
      token = (await world.sbx(['token', 'victim'])).stdout.trim();
      await world.json(['create', '--name', 'evil']);
      await world.put('evil', 'echo_server.py', '/srv/echo.py');
      await world.put('evil', 'ws_echo.py', '/srv/ws.py');
      await world.sbx(['exec', '-d', 'evil', '--', 'python3', '/srv/echo.py', '8080']);
      await world.sbx(['exec', '-d', 'evil', '--', 'python3', '/srv/ws.py', '9090']);
      await world.json(['port', 'expose', 'evil', '8080', '9090']);
      gw = world.gatewayPort();
      victim = world.url(8000, 'victim');
      victimOrigin = `http://8000-victim.sbx.localhost:${gw}`;
      evil = world.url(8080, 'evil');
      evilOrigin = `http://8080-evil.sbx.localhost:${gw}`;
      await eventually(async () => (await curl([...withToken(token), victim])).status === 200, 'the private echo server');
      await eventually(async () => (await curl([evil])).status === 200, 'the public echo server');
      await eventually(async () => (await upgrade(gw, `9000-victim.sbx.localhost:${gw}`, '/', { 'x-sbx-traffic-token': token })).status === 101, 'the private WebSocket server');
      await eventually(async () => (await upgrade(gw, `9090-evil.sbx.localhost:${gw}`, '/', {})).status === 101, 'the public WebSocket server');
      assert.equal((await world.json(['gateway', 'status'])).engine, engine);
    });

    describe("a page of another sandbox using the user's sbx_token cookie (CSRF)", () => {
      const cookie = () => ['-H', `Cookie: sbx_token=${token}`];
      const refused = (r: { status: number; headers: Record<string, string> }, what: string) => {
        assert.equal(r.status, 403, what);
        assert.equal(r.headers['x-sbx-error'], 'cross_site', what);
      };

      it('attack: fetch(url, {credentials: "include"}) from 8080-evil (same-site, CORS) gets 403 cross_site', async () => {
        const r = await curl([...cookie(), '-H', 'Sec-Fetch-Site: same-site', '-H', 'Sec-Fetch-Mode: cors', '-H', 'Sec-Fetch-Dest: empty', '-H', `Origin: ${evilOrigin}`, '-H', `Referer: ${evilOrigin}/`, victim]);
        refused(r, 'fetch');
      });

      it('attack: an <img> or no-cors fetch (no Origin) gets 403', async () => {
        refused(await curl([...cookie(), '-H', 'Sec-Fetch-Site: same-site', '-H', 'Sec-Fetch-Mode: no-cors', '-H', 'Sec-Fetch-Dest: image', '-H', `Referer: ${evilOrigin}/`, victim]), 'img');
      });

      it('attack: a form POST from 8080-evil gets 403, with a message that says what to do (HTML for browsers)', async () => {
        const r = await curl(['-X', 'POST', '-d', 'delete=all', ...cookie(), '-H', 'Accept: text/html', '-H', 'Sec-Fetch-Site: same-site', '-H', 'Sec-Fetch-Mode: navigate', '-H', 'Sec-Fetch-Dest: document', '-H', `Origin: ${evilOrigin}`, victim]);
        refused(r, 'form');
        assert.match(r.body, /403 Forbidden/);
        assert.match(r.body, /sbx_token cookie/);
      });

      it('attack: a link from 8080-evil (top-level navigation, same-site) gets 403', async () => {
        refused(await curl([...cookie(), '-H', 'Sec-Fetch-Site: same-site', '-H', 'Sec-Fetch-Mode: navigate', '-H', 'Sec-Fetch-Dest: document', '-H', 'Sec-Fetch-User: ?1', victim]), 'link');
      });

      it('attack: a page of another site entirely (cross-site) gets 403', async () => {
        refused(await curl([...cookie(), '-H', 'Sec-Fetch-Site: cross-site', '-H', 'Sec-Fetch-Mode: navigate', victim]), 'cross-site');
      });

      it('attack: a foreign Origin is refused even without fetch metadata or with a same-origin claim', async () => {
        refused(await curl([...cookie(), '-X', 'POST', '-H', `Origin: ${evilOrigin}`, victim]), 'no Sec-Fetch-Site');
        refused(await curl([...cookie(), '-H', 'Sec-Fetch-Site: same-origin', '-H', `Origin: ${evilOrigin}`, victim]), 'same-origin, foreign Origin');
        refused(await curl([...cookie(), '-H', 'Origin: null', victim]), 'Origin: null (sandboxed iframe)');
        refused(await curl([...cookie(), '-H', `Origin: https://8000-victim.sbx.localhost:${gw}`, victim]), 'another scheme');
        refused(await curl([...cookie(), '-H', `Origin: http://8000-victim.sbx.localhost:${gw + 1}`, victim]), 'another port');
      });

      it("attack: the path-routed host is guarded the same way (victim.sbx.localhost/port/8000/)", async () => {
        const url = `http://victim.sbx.localhost:${gw}/port/8000/`;
        refused(await curl([...cookie(), '-H', 'Sec-Fetch-Site: same-site', '-H', `Origin: ${evilOrigin}`, url]), 'path routing');
        const own = await curl([...cookie(), '-H', 'Sec-Fetch-Site: same-origin', '-H', `Origin: http://victim.sbx.localhost:${gw}`, url]);
        assert.equal(own.status, 200, 'control: its own page');
      });

      it("control: the port's own pages (same-origin, its own Origin) use the cookie: GET and POST", async () => {
        const get = await curl([...cookie(), '-H', 'Sec-Fetch-Site: same-origin', '-H', 'Sec-Fetch-Mode: cors', '-H', `Origin: ${victimOrigin}`, victim]);
        assert.equal(get.status, 200);
        const post = await curl(['-X', 'POST', '-d', 'x=1', ...cookie(), '-H', 'Sec-Fetch-Site: same-origin', '-H', `Origin: ${victimOrigin}`, victim]);
        assert.equal(post.status, 200);
        assert.equal(JSON.parse(post.body).method, 'POST');
        const upper = await curl([...cookie(), '-H', 'Sec-Fetch-Site: same-origin', '-H', `Origin: ${victimOrigin.toUpperCase().replace('HTTP:', 'http:')}`, victim]);
        assert.equal(upper.status, 200, 'host names compare without case');
      });

      it('control: a URL typed or pasted (Sec-Fetch-Site: none) and clients without fetch metadata use the cookie', async () => {
        assert.equal((await curl([...cookie(), '-H', 'Sec-Fetch-Site: none', '-H', 'Sec-Fetch-Mode: navigate', '-H', 'Sec-Fetch-User: ?1', victim])).status, 200);
        assert.equal((await curl([...cookie(), victim])).status, 200);
      });

      it('control: the header token and Authorization: Bearer work whatever Origin and Sec-Fetch-Site say', async () => {
        const foreign = ['-H', 'Sec-Fetch-Site: same-site', '-H', `Origin: ${evilOrigin}`];
        assert.equal((await curl([...foreign, ...withToken(token), victim])).status, 200);
        assert.equal((await curl([...foreign, '-H', `Authorization: Bearer ${token}`, victim])).status, 200);
        assert.equal((await curl([...foreign, ...cookie(), ...withToken(token), victim])).status, 200, 'a header beside the cookie');
      });

      it('control: ?sbx_token= still redirects and sets the cookie, from wherever the link was', async () => {
        const r = await curl(['-H', 'Sec-Fetch-Site: cross-site', '-H', 'Sec-Fetch-Mode: navigate', `${victim}?sbx_token=${token}`]);
        assert.equal(r.status, 302);
        assert.match(r.headers['set-cookie']!, /^sbx_token=.+; Path=\/; Max-Age=604800; HttpOnly; SameSite=Lax/);
      });

      it('control: public ports need no token, so foreign pages reach them as before', async () => {
        assert.equal((await curl(['-H', 'Sec-Fetch-Site: same-site', '-H', `Origin: ${victimOrigin}`, evil])).status, 200);
      });
    });

    describe('WebSocket and other upgrades from a foreign Origin', () => {
      const ws = (extra: Record<string, string>) => upgrade(gw, `9000-victim.sbx.localhost:${gw}`, '/chat', extra);

      it("attack: new WebSocket('ws://9000-victim…') from 8080-evil with the cookie gets 403 cross_site", async () => {
        const r = await ws({ cookie: `sbx_token=${token}`, origin: evilOrigin, 'sec-fetch-site': 'same-site', 'sec-fetch-mode': 'websocket' });
        assert.deepEqual(r, { status: 403, code: 'cross_site' });
        assert.deepEqual(await ws({ cookie: `sbx_token=${token}`, origin: evilOrigin }), { status: 403, code: 'cross_site' }, 'no fetch metadata');
      });

      it('attack: a tunnel (sbx port forward) asked with a cookie from a foreign Origin gets 403', async () => {
        const id = (await world.json(['inspect', 'victim'])).id;
        const r = await upgrade(gw, `sbx.localhost:${gw}`, `/_sbx/tunnel/${id}/9000`, { cookie: `sbx_token=${token}`, origin: evilOrigin }, 'sbx-tunnel');
        assert.deepEqual(r, { status: 403, code: 'cross_site' });
        const ok = await upgrade(gw, `sbx.localhost:${gw}`, `/_sbx/tunnel/${id}/9000`, { 'x-sbx-traffic-token': token, origin: evilOrigin }, 'sbx-tunnel');
        assert.equal(ok.status, 101, 'control: with the header token');
      });

      it("control: the port's own page opens it with the cookie", async () => {
        const r = await ws({ cookie: `sbx_token=${token}`, origin: `http://9000-victim.sbx.localhost:${gw}`, 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'websocket' });
        assert.equal(r.status, 101);
      });

      it('control: the header token and a bearer open it from any Origin', async () => {
        assert.equal((await ws({ 'x-sbx-traffic-token': token, origin: evilOrigin })).status, 101);
        assert.equal((await ws({ authorization: `Bearer ${token}`, origin: evilOrigin, 'sec-fetch-site': 'cross-site' })).status, 101);
      });

      it('control: a public WebSocket opens from any Origin without a token', async () => {
        const r = await upgrade(gw, `9090-evil.sbx.localhost:${gw}`, '/', { origin: victimOrigin, 'sec-fetch-site': 'same-site' });
        assert.equal(r.status, 101);
      });
    });

    describe('malformed escapes in the token', () => {
      it('attack: ?sbx_token=%E0%A4%A gets 403 token_invalid, not 500', async () => {
        for (const bad of ['%E0%A4%A', '%', '%ZZ']) {
          const r = await curl(['-H', 'Accept: application/json', `${victim}?sbx_token=${bad}`]);
          assert.equal(r.status, 403, bad);
          assert.equal(JSON.parse(r.body).error.code, 'token_invalid', bad);
        }
      });

      it('attack: a malformed sbx_token cookie gets 403 token_invalid, on requests and upgrades', async () => {
        const r = await curl(['-H', 'Cookie: sbx_token=%E0%A4%A', victim]);
        assert.equal(r.status, 403);
        assert.equal(r.headers['x-sbx-error'], 'token_invalid');
        assert.deepEqual(await upgrade(gw, `9000-victim.sbx.localhost:${gw}`, '/', { cookie: 'sbx_token=%E0%A4%A' }), { status: 403, code: 'token_invalid' });
        const id = (await world.json(['inspect', 'victim'])).id;
        const tunnel = await upgrade(gw, `sbx.localhost:${gw}`, `/_sbx/tunnel/${id}/9000`, { cookie: 'sbx_token=%E0%A4%A' }, 'sbx-tunnel');
        assert.deepEqual(tunnel, { status: 403, code: 'token_invalid' });
      });

      it('control: a well-formed token in the query, an escaped one in the cookie, and a malformed cookie beside it work', async () => {
        assert.equal((await curl([`${victim}?sbx_token=${token}`])).status, 302);
        assert.equal((await curl(['-H', `Cookie: sbx_token=${encodeURIComponent(token)}`, victim])).status, 200);
        assert.equal((await curl(['-H', `Cookie: other=%E0%A4%A; sbx_token=${token}`, victim])).status, 200);
      });
    });

    describe("the gateway's admin endpoints", () => {
      it('attack: POST /_sbx/reload and GET /_sbx/health on the public listener get the normal 404 page', async () => {
        for (const host of [`127.0.0.1:${gw}`, `sbx.localhost:${gw}`, 'localhost']) {
          const reload = await curl(['-X', 'POST', '-H', `Host: ${host}`, `http://127.0.0.1:${gw}/_sbx/reload`]);
          assert.equal(reload.status, 404, host);
          assert.equal(reload.headers['x-sbx-error'], 'no_sandbox_host', host);
          const health = await curl(['-H', `Host: ${host}`, `http://127.0.0.1:${gw}/_sbx/health`]);
          assert.equal(health.status, 404, host);
          assert.equal(health.headers['x-sbx-error'], 'no_sandbox_host', host);
          assert.doesNotMatch(health.body, /pid|startedAt/);
        }
      });

      it('control: health and reload answer on the control socket (SBX_HOME/run/control.sock)', async () => {
        const health = await control(world.home, 'health');
        assert.equal(health.value.ok, true);
        assert.equal(health.value.pid, JSON.parse(readFileSync(join(world.home, 'gateway.json'), 'utf8')).pid);
        assert.equal(health.value.engine, engine);
        assert.deepEqual(await control(world.home, 'reload'), {});
      });

      it('attack: a client of another control protocol (no version: an sbx from before it) is refused, not served', async () => {
        const old = await control(world.home, 'health', null);
        assert.equal(old.value, undefined);
        assert.deepEqual(old.error.mismatch, { daemon: PROTOCOL_VERSION });
        assert.match(old.error.message, /speaks control protocol \d+, the client 1/);
      });

      it('control: a route change is in force when the command returns (sbx reloads over the socket)', async () => {
        await world.json(['port', 'expose', 'evil', '8081']);
        assert.equal((await curl([world.url(8081, 'evil')])).headers['x-sbx-error'], 'nothing_listening');
        await world.json(['port', 'rm', 'evil', '8081']);
        assert.equal((await curl([world.url(8081, 'evil')])).headers['x-sbx-error'], 'port_not_exposed');
      });

      it('control: gateway status --json keeps its fields', async () => {
        const s = await world.json(['gateway', 'status']);
        assert.deepEqual(Object.keys(s).sort(), ['dnsUpstream', 'domain', 'egressUser', 'engine', 'h2c', 'h2cBy', 'host', 'log', 'networkLog', 'pid', 'port', 'running', 'startedAt', 'url'].sort());
      });
    });

    describe('the token on public ports', () => {
      before(async () => {
        if (engine !== 'nginx') return;
        // Be sure nginx itself carries evil's port (not the Node gateway, which strips already).
        await eventually(() => world.nginxCarries('8080-evil.sbx.localhost'), 'nginx to route evil directly');
      });

      const cases: Array<[string, string | undefined]> = [
        [`a=1; sbx_token=${'T'.repeat(32)}; b=2`, 'a=1; b=2'],
        [`sbx_token=${'T'.repeat(32)}`, undefined],
        [`sbx_token=${'T'.repeat(32)}; a=1`, 'a=1'],
        [`a=1; sbx_token=${'T'.repeat(32)}`, 'a=1'],
        [`a=1; sbx_token=x; b=2; sbx_token=y`, 'a=1; b=2'],
        ['sbx_token2=keep; xsbx_token=keep', 'sbx_token2=keep; xsbx_token=keep'],
      ];
      for (const [sent, want] of cases) {
        it(`${want === sent ? 'control' : 'attack'}: Cookie "${sent}" reaches the sandbox as ${want === undefined ? 'no Cookie' : `"${want}"`}`, async () => {
          const r = await curl(['-H', `Cookie: ${sent}`, evil]);
          assert.equal(r.status, 200);
          assert.equal(seenHeader(r.body, 'cookie'), want);
        });
      }

      it("attack: the victim's real cookie, sent to a public port, does not reach it", async () => {
        const r = await curl(['-H', `Cookie: theme=dark; sbx_token=${token}`, evil]);
        assert.doesNotMatch(r.body, new RegExp(token));
        assert.equal(seenHeader(r.body, 'cookie'), 'theme=dark');
      });

      it('attack: the token header (sbx fetch sends it) does not reach a public port either; other headers do', async () => {
        const r = await curl([...withToken(token), '-H', 'X-Other: kept', evil]);
        assert.equal(seenHeader(r.body, 'x-sbx-traffic-token'), undefined);
        assert.equal(seenHeader(r.body, 'x-other'), 'kept');
        const evilToken = (await world.sbx(['token', 'evil'])).stdout.trim();
        const fetched = await world.sbx(['fetch', 'evil', '8080']);
        assert.equal(fetched.code, 0, fetched.stderr);
        assert.doesNotMatch(fetched.stdout, new RegExp(evilToken));
      });

      it('control: a public WebSocket sent cookies still opens', async () => {
        const r = await upgrade(gw, `9090-evil.sbx.localhost:${gw}`, '/', { cookie: `a=1; sbx_token=${token}` });
        assert.equal(r.status, 101);
      });
    });
  });
}
