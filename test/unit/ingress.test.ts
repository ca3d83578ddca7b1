import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { maskHost, parseCustomDomain, parsePort, portInfos, portUrl, routeHost, routePath, validateMaskHost } from '../../src/core/ports.ts';
import { parseDuration } from '../../src/core/duration.ts';
import { newToken, tokensEqual } from '../../src/core/token.ts';
import { findToken, stripToken, withoutQueryToken } from '../../src/gateway/auth.ts';
import { renderNginxConfig, upstreamName } from '../../src/gateway/nginx-config.ts';
import { BUILT_NGINX, findNginx, nginxTakesH2c } from '../../src/gateway/nginx.ts';
import { H2_PREFACE_HEX, renderH2cFrontConfig } from '../../src/gateway/haproxy-config.ts';
import { frontMaxconn } from '../../src/gateway/h2c-front.ts';
import { sourceLimitSetting } from '../../src/gateway/settings.ts';
import { UsageError } from '../../src/core/errors.ts';
import { gatewayAddress, guardScript } from '../../src/net/listener-guard.ts';
import { crossSiteRefusal } from '../../src/gateway/cookie-guard.ts';

/** `nginx -t` of this configuration, written into dir (Debian's nginx, or another binary). */
function nginxTest(dir: string, conf: string, bin = '/usr/sbin/nginx') {
  writeFileSync(join(dir, 'nginx.conf'), conf);
  return spawnSync(bin, ['-t', '-p', `${dir}/`, '-e', join(dir, 'error.log'), '-c', join(dir, 'nginx.conf')], { encoding: 'utf8' });
}

describe('ports', () => {
  for (const good of ['1', '80', '65535', ' 8080 ']) it(`accepts port "${good}"`, () => assert.equal(parsePort(good), Number(good)));
  for (const bad of ['0', '65536', '-1', '80.5', 'http', '', '1e3']) {
    it(`rejects port "${bad}"`, () => assert.throws(() => parsePort(bad), /invalid port .* whole number from 1 to 65535/));
  }
  it('builds URLs, leaving out :80', () => {
    assert.equal(portUrl(3000, 'web', { domain: 'sbx.localhost', port: 7070 }), 'http://3000-web.sbx.localhost:7070/');
    assert.equal(portUrl(3000, 'web', { domain: 'sbx.localhost', port: 80 }), 'http://3000-web.sbx.localhost/');
  });
});

describe('routing a Host header', () => {
  const d = 'sbx.localhost';
  const cases: Array<[string | undefined, unknown]> = [
    ['3000-web.sbx.localhost:7070', { kind: 'port', sandbox: 'web', port: 3000 }],
    ['3000-WEB.SBX.LOCALHOST', { kind: 'port', sandbox: 'web', port: 3000 }],
    ['8080-my-box-1.sbx.localhost.', { kind: 'port', sandbox: 'my-box-1', port: 8080 }],
    ['web.sbx.localhost:7070', { kind: 'sandbox', sandbox: 'web' }],
    ['99999-web.sbx.localhost', { kind: 'sandbox', sandbox: '99999-web' }],
    ['sbx.localhost:7070', { kind: 'gateway' }],
    ['127.0.0.1:7070', { kind: 'gateway' }],
    ['[::1]:7070', { kind: 'gateway' }],
    [undefined, { kind: 'gateway' }],
    ['a.b.sbx.localhost', undefined],
    ['example.test', undefined],
  ];
  for (const [host, want] of cases) it(`${host}`, () => assert.deepEqual(routeHost(host, d), want));
  it('routes /port/<port>/ paths, keeping the raw rest', () => {
    assert.deepEqual(routePath('/port/3000/a%2Fb?x=1'), { port: 3000, path: '/a%2Fb?x=1' });
    assert.deepEqual(routePath('/port/3000'), { port: 3000, path: '/' });
    assert.deepEqual(routePath('/port/3000?x=1'), { port: 3000, path: '/?x=1' });
    assert.equal(routePath('/port/0/'), undefined);
    assert.equal(routePath('/other'), undefined);
  });
  it('masks the host', () => {
    assert.equal(maskHost('localhost:${PORT}', 3000), 'localhost:3000');
    assert.throws(() => validateMaskHost('bad host'), /invalid --mask-host/);
  });
});

describe('names of the user\'s own (port expose --domain)', () => {
  it('takes DNS names of two labels or more, lower-cased, without a final dot', () => {
    assert.equal(parseCustomDomain('App.Example.TEST.', 'sbx.localhost'), 'app.example.test');
    assert.equal(parseCustomDomain('a-b.c1.io', 'sbx.localhost'), 'a-b.c1.io');
    assert.equal(parseCustomDomain('app.localhost', 'sbx.localhost'), 'app.localhost', 'outside sbx.localhost');
  });
  for (const bad of ['single', 'bad_name.test', '1.2.3.4', '*.example.test', '-a.test', 'a-.test', 'a..test', `${'a'.repeat(64)}.test`, `${'a.'.repeat(127)}test`, '[::1]', ''])
    it(`refuses ${JSON.stringify(bad).slice(0, 40)}`, () => assert.throws(() => parseCustomDomain(bad, 'sbx.localhost'), /invalid domain .*: use a DNS name such as app\.example\.test/));
  it('refuses sbx\'s own domain and names under it', () => {
    for (const own of ['sbx.localhost', 'x.sbx.localhost', '8000-web.sbx.localhost', 'a.b.sbx.localhost'])
      assert.throws(() => parseCustomDomain(own, 'sbx.localhost'), /names under sbx\.localhost are sbx's own/);
  });
  it('refuses .invalid names (the gateway\'s own control host is one)', () => {
    assert.throws(() => parseCustomDomain('sbx-gateway-control.invalid', 'sbx.localhost'), /\.invalid names never resolve/);
  });
  it('puts the port\'s URL on the name and shows it', () => {
    const gw = { domain: 'sbx.localhost', port: 7070 };
    assert.deepEqual(portInfos('web', [{ port: 8000, public: true, domain: 'app.example.test' }, { port: 9000, public: false }], gw), [
      { port: 8000, url: 'http://app.example.test:7070/', public: true, domain: 'app.example.test' },
      { port: 9000, url: 'http://9000-web.sbx.localhost:7070/', public: false },
    ]);
    assert.equal(portInfos('web', [{ port: 8000, public: true, domain: 'app.example.test' }], { ...gw, port: 443, tls: true })[0]!.url, 'https://app.example.test/');
  });
});

describe('durations', () => {
  const cases: Array<[string, number]> = [['30s', 30_000], ['10m', 600_000], ['2h', 7_200_000], ['1d', 86_400_000], ['1h30m', 5_400_000], ['1.5s', 1500]];
  for (const [text, ms] of cases) it(text, () => assert.equal(parseDuration(text), ms));
  for (const bad of ['', '10', 'soon', '5x', '500ms', '1s2']) it(`rejects "${bad}"`, () => assert.throws(() => parseDuration(bad), /invalid duration/));
});

describe('tokens', () => {
  it('are 192 random bits in base64url, and differ', () => {
    const a = newToken();
    assert.match(a, /^[A-Za-z0-9_-]{32}$/);
    assert.notEqual(a, newToken());
  });
  it('compare equal only when equal', () => {
    const t = newToken();
    assert.equal(tokensEqual(t, t), true);
    assert.equal(tokensEqual(t.slice(0, -1) + (t.endsWith('A') ? 'B' : 'A'), t), false);
    assert.equal(tokensEqual(t.slice(1), t), false);
    assert.equal(tokensEqual(undefined, t), false);
    assert.equal(tokensEqual('', t), false);
  });
  const req = (headers: Record<string, string>, url = '/') => ({ headers, url }) as unknown as IncomingMessage;
  it('are found in the header, a bearer, the query and the cookie, in that order', () => {
    assert.deepEqual(findToken(req({ 'x-sbx-traffic-token': 'h', authorization: 'Bearer b' })), { token: 'h', fromQuery: false });
    assert.deepEqual(findToken(req({ authorization: 'bearer  b ' })), { token: 'b', fromQuery: false });
    assert.deepEqual(findToken(req({ cookie: 'sbx_token=c' }, '/x?a=1&sbx_token=q')), { token: 'q', fromQuery: true });
    assert.deepEqual(findToken(req({ cookie: 'a=1; sbx_token=c%2B' })), { token: 'c+', fromQuery: false, fromCookie: true });
    assert.deepEqual(findToken(req({})), { fromQuery: false });
  });
  it('a malformed escape is kept as it came (it can never match a token), never thrown', () => {
    for (const bad of ['%E0%A4%A', '%', '%ZZ', 'a%']) {
      assert.deepEqual(findToken(req({}, `/?sbx_token=${bad}`)), { token: bad, fromQuery: true }, bad);
      assert.deepEqual(findToken(req({ cookie: `sbx_token=${bad}` })), { token: bad, fromQuery: false, fromCookie: true }, bad);
      assert.equal(tokensEqual(bad, newToken()), false);
    }
    assert.deepEqual(findToken(req({ cookie: 'other=%E0%A4%A; sbx_token=ok' })), { token: 'ok', fromQuery: false, fromCookie: true }, 'other cookies are not decoded');
  });
  it('are taken out of what goes upstream', () => {
    assert.equal(withoutQueryToken('/x?a=1&sbx_token=q&b=2'), '/x?a=1&b=2');
    assert.equal(withoutQueryToken('/x?sbx_token=q'), '/x');
    assert.deepEqual(
      stripToken(['Host', 'h', 'X-Sbx-Traffic-Token', 't', 'Authorization', 'Bearer t', 'Cookie', 'a=1; sbx_token=t', 'X-Other', 'o'], 't'),
      ['Host', 'h', 'Cookie', 'a=1', 'X-Other', 'o'],
    );
    assert.deepEqual(stripToken(['Authorization', 'Bearer other'], 't'), ['Authorization', 'Bearer other'], "the sandbox's own auth stays");
  });
});

describe('the nginx fast path configuration', () => {
  const base = { listenHost: '127.0.0.1', listenPort: 7070, nodeSocket: '/h/run/node.sock', runDir: '/h/run', version: 3, upstreamTimeoutMs: 1500 };
  it('routes each host of a public port straight to the sandbox, with the Node gateway as backup', () => {
    const conf = renderNginxConfig({ ...base, routes: [{ hosts: ['3000-web.sbx.localhost', '3000-abc.sbx.localhost'], name: 'sbx_abc_3000', address: '172.18.0.2:3000' }] });
    const name = upstreamName('sbx_abc_3000');
    assert.match(name, /^sbx_abc_3000_*$/);
    assert.ok(conf.includes(`"3000-web.sbx.localhost" ${name};`));
    assert.ok(conf.includes(`"3000-abc.sbx.localhost" ${name};`));
    assert.ok(conf.includes(`upstream ${name} {`));
    assert.match(conf, /upstream sbx_abc_3000_* \{\n\s+server 172\.18\.0\.2:3000 max_fails=0;\n\s+server unix:\/h\/run\/node\.sock backup;/);
    assert.match(conf, /default sbx_node;/);
    assert.match(conf, /listen 127\.0\.0\.1:7070 default_server/);
    assert.match(conf, /proxy_read_timeout 2s;/);
    assert.match(conf, /return 200 "3";/);
  });
  it('sends a masked Host only for that route, and quotes values safely', () => {
    const conf = renderNginxConfig({ ...base, routes: [{ hosts: ['80-m.sbx.localhost'], name: 'sbx_m_80', address: '172.18.0.3:80', hostHeader: 'local"host:$x' }] });
    assert.match(conf, /"80-m\.sbx\.localhost" "local\\"host:\$\{dollar\}x";/);
  });
  it('workers as sbx-gateway: that user and group, temp files where they can write, pid and log stay in the run dir', () => {
    const conf = renderNginxConfig({ ...base, routes: [], nodeSocket: '/run/sbx/abc/node.sock', tempDir: '/run/sbx/abc', user: 'sbx-gateway sbx-gateway' });
    assert.match(conf, /^user sbx-gateway sbx-gateway;$/m);
    assert.match(conf, /^pid \/h\/run\/nginx\.pid;$/m);
    for (const d of ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) assert.match(conf, new RegExp(`${d}_temp_path /run/sbx/abc/nginx-`), d);
    assert.match(conf, /server unix:\/run\/sbx\/abc\/node\.sock;/);
    assert.doesNotMatch(renderNginxConfig({ ...base, routes: [] }), /^user /m, 'no user line unless asked');
  });
  it('a thousand routes: nginx accepts them without falling back to a slower host lookup', { skip: !existsSync('/usr/sbin/nginx') && 'no nginx' }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'sbx-nginx-'));
    try {
      const routes = Array.from({ length: 1000 }, (_, i) => ({ hosts: [`8080-bench-s${i}.sbx.localhost`, `8080-id${i}xxxxxx.sbx.localhost`], name: `sbx_id${i}_8080`, address: `10.1.${i >> 4}.${(i & 15) * 16 + 2}:8080` }));
      const r = nginxTest(dir, renderNginxConfig({ ...base, runDir: dir, nodeSocket: join(dir, 'node.sock'), routes }));
      assert.equal(r.status, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /could not build optimal/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('a name of one\'s own of 253 characters: nginx -t accepts the map (its bucket grows to hold it)', { skip: !existsSync('/usr/sbin/nginx') && 'no nginx' }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'sbx-nginx-'));
    try {
      const long = `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(61)}`;
      assert.equal(long.length, 253);
      const conf = renderNginxConfig({ ...base, runDir: dir, nodeSocket: join(dir, 'node.sock'), routes: [{ hosts: ['8000-w.sbx.localhost', long], name: 'sbx_w_8000', address: '172.18.0.3:8000' }] });
      assert.match(conf, /map_hash_bucket_size 512;/);
      assert.match(renderNginxConfig({ ...base, routes: [] }), /map_hash_bucket_size 128;/, 'the usual size otherwise');
      const r = nginxTest(dir, conf);
      assert.equal(r.status, 0, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('HTTPS: TLS on both listeners, gRPC calls sent on with grpc_pass (the token stripped for direct routes); nginx -t accepts it', { skip: !existsSync('/usr/sbin/nginx') && 'no nginx' }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'sbx-nginx-'));
    try {
      const { serverCertificate } = await import('../../src/api/ca.ts');
      const cert = await serverCertificate(dir, 'sbx.localhost', {});
      const conf = renderNginxConfig({ ...base, runDir: dir, nodeSocket: join(dir, 'node.sock'), routes: [{ hosts: ['8000-w.sbx.localhost'], name: 'sbx_w_8000', address: '172.18.0.3:8000' }], tls: { cert: cert.certPath, key: cert.keyPath } });
      assert.equal(conf.match(/listen \S+ ssl http2/g)?.length, 2, 'the control server and the default server');
      assert.match(conf, /if \(\$sbx_grpc\) \{ return 419; \}/);
      assert.match(conf, /grpc_pass grpc:\/\/\$sbx_upstream_h2;/);
      assert.match(conf, /grpc_set_header X-Sbx-Traffic-Token \$sbx_token_header;/);
      assert.match(conf, /grpc_set_header Cookie \$sbx_cookie;/);
      assert.doesNotMatch(renderNginxConfig({ ...base, routes: [] }), /ssl|grpc/, 'nothing of it without TLS');
      const r = nginxTest(dir, conf);
      assert.equal(r.status, 0, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('nginx 1.25.1+: h2c on the TCP listener itself (`http2 on;` in both servers, no `listen ... http2`, no PROXY lines or real_ip), HTTPS by `http2 on;` too; without h2c no HTTP/2 at all; h2c is refused for an older nginx', () => {
    const routes = [{ hosts: ['8000-w.sbx.localhost'], name: 'sbx_w_8000', address: '172.18.0.3:8000' }];
    const conf = renderNginxConfig({ ...base, routes, http2Directive: true, h2c: true });
    assert.equal(conf.match(/listen 127\.0\.0\.1:7070( default_server backlog=4096)?;\n\s+http2 on;/g)?.length, 2, 'the control server and the default server');
    assert.doesNotMatch(conf, /proxy_protocol|real_ip|listen [^;]*http2/);
    assert.match(conf, /grpc_pass grpc:\/\/\$sbx_upstream_h2;/);
    assert.match(conf, /if \(\$sbx_grpc\) \{ return 419; \}/);
    assert.match(conf, /"HTTP\/2\.0:unknown" node;/);
    const tls = renderNginxConfig({ ...base, routes, http2Directive: true, tls: { cert: '/c.pem', key: '/k.pem' } });
    assert.equal(tls.match(/listen \S+ ssl( default_server backlog=4096)?;\n\s+http2 on;/g)?.length, 2);
    assert.doesNotMatch(tls, /listen [^;]*http2/);
    assert.doesNotMatch(renderNginxConfig({ ...base, routes, http2Directive: true }), /http2 on|grpc/);
    assert.throws(() => renderNginxConfig({ ...base, routes, h2c: true }), /needs nginx >= 1\.25\.1/);
    assert.equal(nginxTakesH2c('/nonexistent/nginx'), false);
  });
  it('the nginx that setup builds takes h2c (Debian bookworm\'s 1.22 does not); its nginx -t accepts both configurations without a warning', { skip: !existsSync(BUILT_NGINX) && 'no nginx 1.26' }, async () => {
    assert.equal(nginxTakesH2c(BUILT_NGINX), true);
    assert.equal(findNginx({}), BUILT_NGINX, 'preferred to Debian\'s');
    if (existsSync('/usr/sbin/nginx')) {
      assert.equal(nginxTakesH2c('/usr/sbin/nginx'), false, "Debian bookworm's 1.22");
      assert.equal(findNginx({ SBX_NGINX: '/usr/sbin/nginx' }), '/usr/sbin/nginx', 'SBX_NGINX first');
    }
    const dir = mkdtempSync(join(tmpdir(), 'sbx-nginx-'));
    try {
      const routes = [{ hosts: ['8000-w.sbx.localhost'], name: 'sbx_w_8000', address: '172.18.0.3:8000' }];
      const r = nginxTest(dir, renderNginxConfig({ ...base, runDir: dir, nodeSocket: join(dir, 'node.sock'), routes, http2Directive: true, h2c: true }), BUILT_NGINX);
      assert.equal(r.status, 0, r.stderr);
      assert.doesNotMatch(r.stderr, /\[warn\]/, r.stderr);
      const { serverCertificate } = await import('../../src/api/ca.ts');
      const cert = await serverCertificate(dir, 'sbx.localhost', {});
      const t = nginxTest(dir, renderNginxConfig({ ...base, runDir: dir, nodeSocket: join(dir, 'node.sock'), routes, http2Directive: true, tls: { cert: cert.certPath, key: cert.keyPath } }), BUILT_NGINX);
      assert.equal(t.status, 0, t.stderr);
      assert.doesNotMatch(t.stderr, /\[warn\]/, t.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('behind the h2c front: unix sockets with PROXY lines (HTTP/1.1 and http2), the client address from them, gRPC by grpc_pass; nginx -t accepts it', { skip: !existsSync('/usr/sbin/nginx') && 'no nginx' }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'sbx-nginx-'));
    try {
      const front = { h1Socket: join(dir, 'h1.sock'), h2cSocket: join(dir, 'h2c.sock'), controlSocket: join(dir, 'control.sock') };
      const conf = renderNginxConfig({ ...base, runDir: dir, nodeSocket: join(dir, 'node.sock'), routes: [{ hosts: ['8000-w.sbx.localhost'], name: 'sbx_w_8000', address: '172.18.0.3:8000' }], front });
      assert.match(conf, new RegExp(`listen unix:${front.h1Socket} proxy_protocol default_server`));
      assert.match(conf, new RegExp(`listen unix:${front.h2cSocket} proxy_protocol http2 default_server`));
      assert.match(conf, new RegExp(`listen unix:${front.controlSocket};`), 'the probes\' socket takes no PROXY line');
      assert.doesNotMatch(conf, /listen 127\.0\.0\.1/, 'no TCP listener: HAProxy owns the port');
      assert.match(conf, /set_real_ip_from unix:;\n\s+real_ip_header proxy_protocol;/);
      // gRPC by grpc_pass over HTTP/2 only: gRPC-Web comes as HTTP/1.1 and goes as any request.
      assert.match(conf, /map "\$server_protocol:\$http_content_type" \$sbx_grpc \{ default 0; "~\^HTTP\/2\\\.0:application\/grpc\(\$\|\[\+;\]\)" 1; \}/);
      assert.match(conf, /grpc_pass grpc:\/\/\$sbx_upstream_h2;/);
      assert.doesNotMatch(renderNginxConfig({ ...base, routes: [] }), /proxy_protocol|real_ip/, 'nothing of it without the front');
      // HTTP/2 that is not gRPC: to the Node gateway as HTTP/2 until the port has answered the
      // preface, then straight to it as HTTP/2 (grpc_pass) or HTTP/1.1 (proxy_pass).
      assert.match(conf, /map \$host \$sbx_h2_route \{\n\s+default node;\n\s+"8000-w\.sbx\.localhost" unknown;\n\s+\}/);
      assert.match(conf, /"HTTP\/2\.0:unknown" node;/);
      assert.match(conf, /"HTTP\/2\.0:h2" grpc;/);
      assert.match(conf, /if \(\$sbx_h2_way = node\) \{ return 420; \}/);
      assert.match(conf, /location @sbx_h2_node \{\n\s+grpc_pass grpc:\/\/sbx_node_h2;/);
      // HTTP/2 upstream connections in blocks of their own (an idle one reused by proxy_pass was garbage).
      assert.match(conf, /upstream sbx_node_h2 \{/);
      assert.match(conf, new RegExp(`"8000-w\\.sbx\\.localhost" ${upstreamName('sbx_w_8000_h2')};`));
      assert.match(conf, new RegExp(`upstream ${upstreamName('sbx_w_8000_h2')} \\{`));
      const learnt = renderNginxConfig({ ...base, runDir: dir, nodeSocket: join(dir, 'node.sock'), front, routes: [{ hosts: ['8000-w.sbx.localhost'], name: 'sbx_w_8000', address: '172.18.0.3:8000', h2: 'h2' }, { hosts: ['8001-w.sbx.localhost'], name: 'sbx_w_8001', address: '172.18.0.3:8001', h2: 'h1' }] });
      assert.match(learnt, /"8000-w\.sbx\.localhost" h2;/);
      assert.match(learnt, /"8001-w\.sbx\.localhost" h1;/);
      assert.equal(nginxTest(dir, learnt).status, 0);
      const r = nginxTest(dir, conf);
      assert.equal(r.status, 0, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('the h2c front\'s maxconn fits the hard limit on open files (two per connection), which HAProxy cannot raise', () => {
    const limits = (soft: string, hard: string) => `Limit                     Soft Limit           Hard Limit           Units\nMax open files            ${soft}                ${hard}                files\n`;
    assert.equal(frontMaxconn(8000, limits('1024', '1048576')), 8000);
    assert.equal(frontMaxconn(8000, limits('20000', '20000')), 8000);
    assert.equal(frontMaxconn(8000, limits('1024', '4096')), 1948);
    assert.equal(frontMaxconn(8000, limits('unlimited', 'unlimited')), 8000);
    assert.equal(frontMaxconn(8000, ''), 8000, 'no /proc: as wanted');
  });
  it('nginx raises its workers\' open files up to the hard limit, not past it (setrlimit failed with 32,768 against 20,000); nginx -t accepts it', { skip: !existsSync('/usr/sbin/nginx') && 'no nginx' }, () => {
    assert.match(renderNginxConfig({ ...base, routes: [] }), /worker_connections 16384; \}\nworker_rlimit_nofile 32768;/);
    assert.match(renderNginxConfig({ ...base, routes: [], openFiles: 20000 }), /worker_connections 16384; \}\nworker_rlimit_nofile 20000;/);
    assert.match(renderNginxConfig({ ...base, routes: [], openFiles: 4096 }), /worker_connections 4032; \}\nworker_rlimit_nofile 4096;/);
    const dir = mkdtempSync(join(tmpdir(), 'sbx-nofile-'));
    try {
      const r = nginxTest(dir, renderNginxConfig({ ...base, runDir: dir, nodeSocket: join(dir, 'node.sock'), routes: [], openFiles: 4096 }));
      assert.equal(r.status, 0, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('the h2c front: the preface sends a connection to the http2 socket, a whole request or 24 bytes end the wait (that rule first), PROXY lines to nginx; haproxy -c accepts it', { skip: !existsSync('/usr/sbin/haproxy') && 'no haproxy' }, () => {
    assert.equal(Buffer.from(H2_PREFACE_HEX, 'hex').toString('latin1'), 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
    const dir = mkdtempSync(join(tmpdir(), 'sbx-haproxy-'));
    try {
      const conf = renderH2cFrontConfig({ listenHost: '127.0.0.1', listenPort: 7070, h1Socket: join(dir, 'h1.sock'), h2cSocket: join(dir, 'h2c.sock'), maxconn: 8000, user: { name: 'nobody', group: 'nogroup' } });
      assert.match(conf, /bind ipv4@127\.0\.0\.1:7070 /);
      assert.match(renderH2cFrontConfig({ listenHost: '::1', listenPort: 7070, h1Socket: '/a', h2cSocket: '/b', maxconn: 10 }), /bind ipv6@::1:7070 v6only /);
      assert.match(conf, /^\s+noreuseport$/m, 'a second gateway on the port fails to bind');
      // One rule: a rule waiting for 24 bytes before the one for a whole request held short
      // requests 2 s; and the preface's first 18 bytes parse as a whole HTTP/1 request.
      const rules = conf.split('\n').filter((l) => l.includes('tcp-request content'));
      assert.deepEqual(rules.map((l) => l.trim()), ['tcp-request content accept if { req.len ge 24 } || HTTP !{ req.payload(0,4) -m bin 50524920 }']);
      assert.equal(Buffer.from('50524920', 'hex').toString(), 'PRI ');
      assert.match(conf, new RegExp(`use_backend sbx_h2c if \\{ req\\.payload\\(0,24\\) -m bin ${H2_PREFACE_HEX} \\}`));
      assert.match(conf, new RegExp(`server nginx ${join(dir, 'h2c.sock')} send-proxy`));
      assert.match(conf, /^\s+user nobody\n\s+group nogroup$/m);
      assert.throws(() => renderH2cFrontConfig({ listenHost: '127.0.0.1', listenPort: 1, h1Socket: '/a b', h2cSocket: '/b', maxconn: 1 }), /cannot go into/);
      writeFileSync(join(dir, 'haproxy.cfg'), conf);
      const r = spawnSync('/usr/sbin/haproxy', ['-c', '-f', join(dir, 'haproxy.cfg')], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr + r.stdout);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('the per-source limit (SBX_GATEWAY_SOURCE_LIMIT): connections in the kernel (the listener guard: a reset past the limit, local clients not counted), requests in flight in nginx (loopback not counted); slow headers and streams bounded; nft -c and nginx -t accept them', { skip: !existsSync('/usr/sbin/nginx') && 'no nginx' }, () => {
    const listeners = { dns: 53, http: 80, tls: 443 };
    const guard = guardScript('sbxgw_test', listeners, { host: '0.0.0.0', port: 7070, limit: 40 });
    assert.match(guard, /add rule inet sbxgw_test input tcp dport 7070 iif != lo ct state new add @sources4 \{ ip saddr ct count over 40 \} reject with tcp reset/);
    assert.match(guard, /add rule inet sbxgw_test input tcp dport 7070 iif != lo ct state new ip saddr != @sources4 reject with tcp reset/, 'a full table refuses clients not in it');
    assert.match(guard, /add rule inet sbxgw_test input tcp dport 7070 iif != lo ct state new add @sources6 \{ ip6 saddr and ffff:ffff:ffff:ffff:: ct count over 40 \} reject with tcp reset/, 'IPv6 clients by /64');
    assert.match(guard, /ip6 saddr and ffff:ffff:ffff:ffff:: != @sources6 reject with tcp reset/);
    const one = guardScript('sbxgw_test', listeners, { host: '10.1.2.3', port: 7070, limit: 40 });
    assert.match(one, /tcp dport 7070 ip daddr 10\.1\.2\.3 iif != lo ct state new add @sources4/, 'only the gateway\'s own address');
    assert.doesNotMatch(one, /sources6/);
    assert.match(guardScript('sbxgw_test', listeners, { host: 'fd00::1', port: 7070, limit: 40 }), /tcp dport 7070 ip6 daddr fd00::1 iif != lo ct state new add @sources6/);
    // A rewrite while serving keeps the sets (the clients' counts): the chain is flushed, the table is not deleted.
    const kept = guardScript('sbxgw_test', listeners, { host: '0.0.0.0', port: 7070, limit: 40 }, true);
    assert.match(kept, /flush chain inet sbxgw_test input/);
    assert.doesNotMatch(kept, /delete table/);
    assert.match(guard, /delete table inet sbxgw_test/, 'control: a start makes the table anew');
    for (const quiet of [{ host: '127.0.0.1', limit: 40 }, { host: '::1', limit: 40 }, { host: '0.0.0.0', limit: 0 }]) {
      assert.doesNotMatch(guardScript('sbxgw_test', listeners, { port: 7070, ...quiet }), /ct count/, `${quiet.host} ${quiet.limit}: no rule`);
    }
    assert.doesNotMatch(guardScript('sbxgw_test', listeners), /ct count/);
    if (process.getuid?.() === 0) {
      for (const script of [guard, one]) {
        const r = spawnSync('nft', ['-c', '-f', '-'], { input: script, encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
      }
    }
    const dir = mkdtempSync(join(tmpdir(), 'sbx-limit-'));
    try {
      const conf = renderNginxConfig({ ...base, runDir: dir, nodeSocket: join(dir, 'node.sock'), routes: [], sourceLimit: 40 });
      assert.match(conf, /geo \$sbx_loopback \{ default 0; 127\.0\.0\.0\/8 1; ::1 1; \}/);
      assert.match(conf, /map \$sbx_loopback \$sbx_source \{ 1 ""; default \$binary_remote_addr; \}/);
      assert.match(conf, /limit_conn sbx_sources 40;/);
      assert.match(conf, /limit_conn_status 429;/);
      assert.match(conf, /client_header_timeout 15s;/);
      assert.match(conf, /http2_max_concurrent_streams 64;/);
      assert.doesNotMatch(renderNginxConfig({ ...base, routes: [], sourceLimit: 0 }), /limit_conn/, '0: no limit');
      const r = nginxTest(dir, conf);
      assert.equal(r.status, 0, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it('the kernel\'s per-client rule matches where the gateway listens: one address of one family, any (a wildcard or a name), or nothing (loopback)', () => {
    assert.deepEqual(gatewayAddress('10.1.2.3'), { family: 'ip', address: '10.1.2.3' });
    assert.deepEqual(gatewayAddress('::ffff:10.1.2.3'), { family: 'ip', address: '10.1.2.3' }, 'IPv4-mapped: IPv4 packets');
    assert.deepEqual(gatewayAddress('fd00:0:0::1'), { family: 'ip6', address: 'fd00::1' });
    for (const any of ['0.0.0.0', '::', '0:0:0:0:0:0:0:0', 'gw.example.test', '127.example.test']) assert.deepEqual(gatewayAddress(any), {}, any);
    for (const local of ['127.0.0.1', '127.9.9.9', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1', 'localhost']) assert.equal(gatewayAddress(local), 'loopback', local);
    assert.doesNotMatch(guardScript('sbxgw_test', { dns: 53, http: 80, tls: 443 }, { host: 'gw.example.test', port: 7070, limit: 4 }), /daddr/, 'a name is never given to nft to resolve');
  });
  it('SBX_GATEWAY_SOURCE_LIMIT: a whole number from 0 to 100000, 512 when unset; anything else is a usage error naming what is accepted', () => {
    assert.equal(sourceLimitSetting(undefined), 512);
    assert.equal(sourceLimitSetting(''), 512);
    assert.equal(sourceLimitSetting('0'), 0);
    assert.equal(sourceLimitSetting(' 64 '), 64);
    for (const bad of ['-1', '1.5', 'many', '100001', '1e3']) assert.throws(() => sourceLimitSetting(bad), (e: Error) => e instanceof UsageError && /invalid SBX_GATEWAY_SOURCE_LIMIT .*use 0 \(no limit\) to 100000/.test(e.message));
  });
  it('upstream names of one length are spread over many lengths (nginx compares a route with every block of its length on each request)', () => {
    const names = Array.from({ length: 1000 }, (_, i) => upstreamName(`sbx_${(i * 7919).toString(36).padStart(10, 'a')}_8080`));
    const byLength = new Map<number, number>();
    for (const n of names) byLength.set(n.length, (byLength.get(n.length) ?? 0) + 1);
    assert.ok(byLength.size > 200, `${byLength.size} lengths`);
    assert.ok(Math.max(...byLength.values()) <= 15, `at most ${Math.max(...byLength.values())} share one length`);
    assert.ok(names.every((n) => /^[a-z0-9_]+$/.test(n)), 'letters, digits and underscores only');
    assert.equal(upstreamName('sbx_abc_3000'), upstreamName('sbx_abc_3000'), 'the same name every time (a config that did not change is not reloaded)');
  });
  it('with no routes, everything goes to the Node gateway', () => {
    const conf = renderNginxConfig({ ...base, routes: [] });
    assert.doesNotMatch(conf, /upstream sbx_[a-z0-9]+_\d+/);
    assert.match(conf, /proxy_pass http:\/\/\$sbx_upstream;/);
  });
});

describe('the sbx_token cookie and other pages of the same site', () => {
  const host = '8000-victim.sbx.localhost:7070';
  const own = 'http://8000-victim.sbx.localhost:7070';
  const evil = 'http://8080-evil.sbx.localhost:7070';
  const accepted: Array<[string, Record<string, string>, string | undefined]> = [
    ['no fetch metadata, no Origin (curl, scripts)', {}, host],
    ['a typed URL or bookmark', { 'sec-fetch-site': 'none' }, host],
    ["the port's own page", { 'sec-fetch-site': 'same-origin', origin: own }, host],
    ['its own Origin in other case', { 'sec-fetch-site': 'same-origin', origin: own.toUpperCase().replace('HTTP', 'http') }, host],
    ['its own Origin without fetch metadata', { origin: own }, host],
    ['port 80, which browsers leave out', { origin: 'http://8000-victim.sbx.localhost' }, '8000-victim.sbx.localhost:80'],
    ['port 80 left out of Host too', { origin: 'http://8000-victim.sbx.localhost' }, '8000-victim.sbx.localhost'],
  ];
  for (const [what, headers, h] of accepted) it(`accepts ${what}`, () => assert.equal(crossSiteRefusal(headers, h), undefined));
  const refused: Array<[string, Record<string, string>, string | undefined]> = [
    ['a page of another sandbox (same-site)', { 'sec-fetch-site': 'same-site', origin: evil }, host],
    ['same-site without Origin (img, no-cors, a link)', { 'sec-fetch-site': 'same-site' }, host],
    ['another site', { 'sec-fetch-site': 'cross-site' }, host],
    ['an unknown Sec-Fetch-Site', { 'sec-fetch-site': 'whatever' }, host],
    ['Sec-Fetch-Site sent twice', { 'sec-fetch-site': 'none, cross-site' }, host],
    ['a foreign Origin without fetch metadata', { origin: evil }, host],
    ['a foreign Origin that claims same-origin', { 'sec-fetch-site': 'same-origin', origin: evil }, host],
    ['Origin: null (sandboxed iframe, data: URL)', { origin: 'null' }, host],
    ['https instead of http', { origin: 'https://8000-victim.sbx.localhost:7070' }, host],
    ['another port', { origin: 'http://8000-victim.sbx.localhost:7071' }, host],
    ['an Origin that only starts like its own', { origin: `${own}.evil.test` }, host],
    ['no Host at all', { origin: own }, undefined],
  ];
  for (const [what, headers, h] of refused) {
    it(`refuses ${what}`, () => {
      const e = crossSiteRefusal(headers, h);
      assert.equal(e?.status, 403);
      assert.equal(e?.code, 'cross_site');
      assert.match(e!.message, /x-sbx-traffic-token header/);
    });
  }
});

describe('the nginx fast path and the token', () => {
  const conf = renderNginxConfig({ listenHost: '127.0.0.1', listenPort: 7070, nodeSocket: '/h/run/node.sock', runDir: '/h/run', version: 1, upstreamTimeoutMs: 1500, routes: [] });
  /** Runs the chain of cookie maps the way nginx does (first matching regex wins, $n replaced). */
  function nginxCookie(cookie: string): string {
    const maps = [...conf.matchAll(/map \$\S+ \$(sbx_cookie_\d+|sbx_cookie_public) \{\n([\s\S]*?)\n  \}/g)];
    assert.ok(maps.length >= 2);
    let value = cookie;
    for (const [, , body] of maps) {
      const rules = [...body!.matchAll(/^\s+"~(.*)" (\S+);$/gm)].map(([, re, out]) => [new RegExp(re!), out!] as const);
      for (const [re, out] of rules) {
        const m = re.exec(value);
        if (!m) continue;
        value = out === '""' ? '' : out.replace(/\$(\d)/g, (_, n) => m[Number(n)] ?? '');
        break;
      }
    }
    return value;
  }
  const cases: Array<[string, string]> = [
    ['a=1; sbx_token=t; b=2', 'a=1; b=2'],
    ['sbx_token=t', ''],
    ['sbx_token=t; a=1', 'a=1'],
    ['a=1; sbx_token=t', 'a=1'],
    ['a=1;sbx_token=t;b=2', 'a=1;b=2'],
    ['a=1; sbx_token = t; b=2', 'a=1; b=2'],
    ['a=1; sbx_token=x; b=2; sbx_token=y', 'a=1; b=2'],
    ['sbx_token=1; sbx_token=2; sbx_token=3; a=1', 'a=1'],
    ['sbx_token=1; sbx_token=2; sbx_token=3; sbx_token=4; a=1', ''],
    ['sbx_token2=keep; xsbx_token=keep; a=sbx_token=keep', 'sbx_token2=keep; xsbx_token=keep; a=sbx_token=keep'],
    ['', ''],
  ];
  for (const [sent, want] of cases) it(`public ports get Cookie "${sent}" as "${want}"`, () => assert.equal(nginxCookie(sent), want));
  it('strips only on direct routes: the Node gateway gets the cookie and the token header as sent', () => {
    assert.match(conf, /map \$sbx_upstream \$sbx_cookie \{\n\s+sbx_node \$http_cookie;\n\s+default \$sbx_cookie_public;/);
    assert.match(conf, /map \$sbx_upstream \$sbx_token_header \{\n\s+sbx_node \$http_x_sbx_traffic_token;\n\s+default "";/);
    assert.match(conf, /proxy_set_header Cookie \$sbx_cookie;/);
    assert.match(conf, /proxy_set_header X-Sbx-Traffic-Token \$sbx_token_header;/);
  });
});
