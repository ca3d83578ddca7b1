// Ports behind URLs through the gateway, driven with real clients (curl, Node's WebSocket, a
// TCP client through `sbx port forward`) against servers in real sandboxes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { BUILT_NGINX } from '../../src/core/built-nginx.ts';
import { curl, eventually, sleep } from '../helpers.ts';
import { closeMode, modeWorld } from '../test-mode.ts';

// Runs as root and as a docker-group user (SBX_TEST_AS; URLs of a remote engine answer on its
// host, which remote-agent.test.ts drives).
const world = await modeWorld({ SBX_UPSTREAM_TIMEOUT_MS: '1500' });
after(async () => {
  await world.cleanup();
  await closeMode();
});

const listening = (url: string, headers: string[] = []) => async () => (await curl([...headers, url])).status === 200;

describe('the seed example: python3 -m http.server behind its URL', () => {
  let box: any;
  before(async () => {
    box = await world.json(['create', '--name', 'seed', '-p', '3000', '--', 'python3', '-m', 'http.server', '3000']);
  });

  it('create prints the URL at once, in the documented shape', () => {
    assert.equal(box.ports.length, 1);
    assert.deepEqual(Object.keys(box.ports[0]).sort(), ['port', 'public', 'url']);
    assert.equal(box.ports[0].port, 3000);
    assert.equal(box.ports[0].public, true);
    assert.equal(box.ports[0].url, world.url(3000, 'seed'));
    assert.equal(box.token, undefined, 'no token in the JSON unless asked');
  });

  it('curl fetches the directory listing through the URL, by name and by id', async () => {
    await eventually(listening(box.ports[0].url), 'the server');
    const byName = await curl([box.ports[0].url]);
    assert.match(byName.body, /Directory listing/);
    const byId = await curl([world.url(3000, box.id)]);
    assert.equal(byId.status, 200);
    assert.match(byId.body, /Directory listing/);
  });

  it('the sandbox host routes /port/<port>/ to the same port (Blaxel style)', async () => {
    const r = await curl([`http://seed.sbx.localhost:${world.gatewayPort()}/port/3000/`]);
    assert.equal(r.status, 200);
    assert.match(r.body, /Directory listing/);
  });

  it('a client that resolves names through glibc reaches it too (python urllib)', async () => {
    const { run } = await import('../helpers.ts');
    const r = await run('python3', ['-c', `import urllib.request; print(urllib.request.urlopen("${box.ports[0].url}").status)`]);
    assert.equal(r.stdout.trim(), '200', r.stderr);
  });

  it('gateway status --json tells where it listens', async () => {
    const s = await world.json(['gateway', 'status']);
    assert.equal(s.running, true);
    assert.equal(s.host, '127.0.0.1');
    assert.equal(s.port, world.gatewayPort());
    assert.equal(s.domain, 'sbx.localhost');
    // Who takes h2c on the port: the Node engine itself, or nginx 1.26 (on the host and in the agent).
    if (s.engine === 'node') assert.equal(s.h2cBy, 'node');
    else if (existsSync(BUILT_NGINX)) assert.equal(s.h2cBy, 'nginx');
  });
});

describe('proxying', () => {
  let url: (path?: string) => string;
  before(async () => {
    await world.json(['create', '--name', 'echo']);
    await world.put('echo', 'echo_server.py', '/srv/echo.py');
    await world.sbx(['exec', '-d', 'echo', '--', 'python3', '/srv/echo.py', '8080']);
    const ports = await world.json<any[]>(['port', 'expose', 'echo', '8080']);
    assert.equal(ports[0].url, world.url(8080, 'echo'));
    url = (path = '/') => world.url(8080, 'echo', path);
    await eventually(listening(url()), 'the echo server');
  });

  it('keeps method, raw path (%2F stays encoded), query and headers; adds X-Forwarded-*', async () => {
    const r = await curl(['-X', 'PATCH', '-H', 'X-Custom: One', '-H', 'X-Forwarded-For: 10.9.8.7', url('/a%2Fb/c?x=1&y=%20z')]);
    const echo = JSON.parse(r.body);
    assert.equal(echo.method, 'PATCH');
    assert.equal(echo.path, '/a%2Fb/c?x=1&y=%20z');
    const h = Object.fromEntries(echo.headers.map(([k, v]: string[]) => [k.toLowerCase(), v]));
    assert.equal(h['x-custom'], 'One');
    assert.equal(h['x-forwarded-for'], '10.9.8.7, 127.0.0.1');
    assert.equal(h['x-forwarded-host'], `8080-echo.sbx.localhost:${world.gatewayPort()}`);
    assert.equal(h['x-forwarded-proto'], 'http');
    assert.equal(h.host, `8080-echo.sbx.localhost:${world.gatewayPort()}`);
    assert.equal(r.headers['x-echo'], 'yes', 'response headers come back');
  });

  it('path routing keeps the rest of the raw path', async () => {
    const r = await curl([`http://echo.sbx.localhost:${world.gatewayPort()}/port/8080/x%2Fy?q=1`]);
    assert.equal(JSON.parse(r.body).path, '/x%2Fy?q=1');
  });

  it('streams a large upload (64 MiB, chunked) without buffering it whole', async () => {
    const r = await curl(['-X', 'POST', '-H', 'Transfer-Encoding: chunked', '--data-binary', '@-', url('/upload')], {
      input: 'x'.repeat(64 * 1024 * 1024),
    });
    assert.equal(JSON.parse(r.body).bodySize, 64 * 1024 * 1024);
  });

  it('streams a response as it is produced: the first piece arrives before the last is sent', async () => {
    const started = Date.now();
    const res = await fetch(url('/stream'));
    const reader = res.body!.getReader();
    const arrivals: Array<[string, number]> = [];
    for (let r = await reader.read(); !r.done; r = await reader.read()) arrivals.push([Buffer.from(r.value).toString(), Date.now() - started]);
    assert.equal(arrivals.map(([text]) => text).join(''), 'chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n');
    const last = arrivals.at(-1)![1];
    assert.ok(last >= 800, `the whole took ${last} ms`);
    assert.ok(arrivals[0]![1] < last - 500, `chunk 0 came at ${arrivals[0]![1]} ms, the end at ${last} ms: held back`);
  });

  it('a lone piece of a stream (then a pause) reaches the client at once, chunked or ended by close', async () => {
    for (const path of ['/lone', '/lone-close']) {
      const started = Date.now();
      const res = await fetch(url(path));
      const reader = res.body!.getReader();
      const first = await reader.read();
      const at = Date.now() - started;
      assert.equal(Buffer.from(first.value!).toString(), 'data: 1\n\n');
      assert.ok(at < 1500, `${path}: the first piece came at ${at} ms, with the pause (3 s): held back`);
      await reader.cancel();
    }
  });

  it('a sandbox\'s X-Accel-Redirect and X-Accel-Limit-Rate are not obeyed by the gateway', async () => {
    const started = Date.now();
    const r = await curl([url('/accel')]);
    assert.equal(r.status, 200);
    assert.equal(r.body, `accel ${'x'.repeat(20000)}`, 'the answer itself, not an internal redirect to /stream');
    assert.ok(Date.now() - started < 3000, 'not slowed to 1 byte/s');
  });

  it('carries WebSocket upgrades (a real WebSocket client)', async () => {
    await world.put('echo', 'ws_echo.py', '/srv/ws.py');
    await world.sbx(['exec', '-d', 'echo', '--', 'python3', '/srv/ws.py', '9000']);
    await world.sbx(['port', 'expose', 'echo', '9000']);
    const target = world.url(9000, 'echo', '/chat?room=1').replace('http:', 'ws:');
    let messages: string[] = [];
    for (let attempt = 0; attempt < 50 && messages.length === 0; attempt++) {
      messages = await new Promise<string[]>((resolve) => {
        const ws = new WebSocket(target);
        const got: string[] = [];
        ws.onopen = () => {
          ws.send('hello');
          ws.send('world');
        };
        ws.onmessage = (ev) => {
          got.push(String(ev.data));
          if (got.length === 2) {
            ws.close();
            resolve(got);
          }
        };
        ws.onerror = () => resolve([]);
      });
      if (messages.length === 0) await sleep(100);
    }
    assert.deepEqual(messages, ['echo: hello', 'echo: world']);
  });

  it('504 when the upstream does not answer in time', async () => {
    const r = await curl(['-H', 'Accept: application/json', url('/slow')]);
    assert.equal(r.status, 504);
    assert.equal(JSON.parse(r.body).error.code, 'upstream_timeout');
  });
});

describe('errors', () => {
  it('404 for an unknown sandbox and for a port that is not exposed; JSON when asked, HTML for browsers', async () => {
    const gw = world.gatewayPort();
    const unknown = await curl(['-H', 'Accept: application/json', `http://3000-nosuch.sbx.localhost:${gw}/`]);
    assert.equal(unknown.status, 404);
    assert.equal(JSON.parse(unknown.body).error.code, 'no_sandbox');
    const notExposed = await curl(['-H', 'Accept: text/html', world.url(4444, 'seed')]);
    assert.equal(notExposed.status, 404);
    assert.match(notExposed.headers['content-type']!, /text\/html/);
    assert.match(notExposed.body, /port 4444 of sandbox seed is not exposed/);
  });

  it('502 saying that nothing listens on the port yet', async () => {
    await world.sbx(['port', 'expose', 'seed', '5555']);
    const r = await curl([world.url(5555, 'seed')]);
    assert.equal(r.status, 502);
    assert.match(r.body, /nothing listens on port 5555 in sandbox seed yet/);
  });

  it('bad ports are usage errors (exit 2) and change nothing', async () => {
    for (const bad of ['0', '65536', 'http', '80.5']) {
      const r = await world.sbx(['port', 'expose', 'seed', bad]);
      assert.equal(r.code, 2, bad);
      assert.match(r.stderr, /^error: invalid port .*1 to 65535/);
    }
    assert.equal((await world.sbx(['create', '-p', '99999'])).code, 2);
    const ghost = await world.sbx(['port', 'expose', 'ghost', '3000']);
    assert.equal(ghost.code, 3);
    assert.match(ghost.stderr, /^error: no sandbox named "ghost"/);
    assert.deepEqual((await world.json<any[]>(['port', 'ls', 'seed'])).map((p) => p.port), [3000, 5555]);
  });
});

describe('runtime exposure and removal', () => {
  it('port rm stops routing at once; port expose is idempotent', async () => {
    await world.json(['create', '--name', 'rt', '--', 'python3', '-m', 'http.server', '7000']);
    const first = await world.json<any[]>(['port', 'expose', 'rt', '7000']);
    const again = await world.json<any[]>(['port', 'expose', 'rt', '7000']);
    assert.deepEqual(first, again);
    await eventually(listening(first[0].url), 'the server');
    assert.deepEqual(await world.json(['port', 'rm', 'rt', '7000']), [{ port: 7000, removed: true }]);
    assert.equal((await curl([first[0].url])).status, 404);
    assert.deepEqual(await world.json(['port', 'ls', 'rt']), []);
    const inspect = await world.json(['inspect', 'rt']);
    assert.deepEqual(inspect.ports, []);
  });
});

describe('servers bound to loopback only (the sandbox still has no NET_ADMIN)', () => {
  before(async () => {
    await world.json(['create', '--name', 'lo']);
    await world.sbx(['exec', '-d', 'lo', '--', 'python3', '-m', 'http.server', '6001', '--bind', '127.0.0.1']);
    await world.sbx(['exec', '-d', 'lo', '--', 'python3', '-m', 'http.server', '6002', '--bind', '::1']);
    await world.sbx(['exec', '-d', 'lo', '--', 'python3', '-m', 'http.server', '6003', '--bind', 'localhost']);
    await world.sbx(['port', 'expose', 'lo', '6001', '6002', '6003']);
  });
  for (const [port, bind] of [[6001, '127.0.0.1'], [6002, '::1'], [6003, 'localhost']] as const) {
    it(`reaches a server on ${bind}`, async () => {
      await eventually(listening(world.url(port, 'lo')), `the server on ${bind}`);
      assert.match((await curl([world.url(port, 'lo')])).body, /Directory listing/);
    });
  }
  it('and the container still lacks NET_ADMIN', async () => {
    const r = await world.sbx(['exec', 'lo', '--', 'ip', 'link', 'add', 'x0', 'type', 'dummy']);
    assert.notEqual(r.code, 0);
  });
});

describe('private ports and tokens', () => {
  let url: string;
  let token: string;
  before(async () => {
    const box = await world.json(['create', '--name', 'priv', '--private', '-p', '3000', '--', 'python3', '-m', 'http.server', '3000']);
    url = box.ports[0].url;
    token = box.token;
    assert.equal(box.ports[0].public, false);
    assert.match(token, /^[A-Za-z0-9_-]{32}$/, '192 bits, base64url');
    await eventually(listening(url, ['-H', `x-sbx-traffic-token: ${token}`]), 'the private server');
  });

  it('403 without a token, saying it is missing; 403 with a wrong one, saying so', async () => {
    const missing = await curl(['-H', 'Accept: application/json', url]);
    assert.equal(missing.status, 403);
    assert.equal(JSON.parse(missing.body).error.code, 'token_missing');
    const wrong = await curl(['-H', 'Accept: application/json', '-H', 'x-sbx-traffic-token: wrong', url]);
    assert.equal(wrong.status, 403);
    assert.equal(JSON.parse(wrong.body).error.code, 'token_invalid');
  });

  it('200 with the header, and with Authorization: Bearer', async () => {
    assert.equal((await curl(['-H', `x-sbx-traffic-token: ${token}`, url])).status, 200);
    assert.equal((await curl(['-H', `Authorization: Bearer ${token}`, url])).status, 200);
  });

  it('browsers: ?sbx_token= sets a cookie and redirects to the clean URL', async () => {
    const first = await curl([`${url}?sbx_token=${token}`]);
    assert.equal(first.status, 302);
    assert.equal(first.headers.location, '/');
    assert.match(first.headers['set-cookie']!, /^sbx_token=.+; Path=\/; Max-Age=604800; HttpOnly; SameSite=Lax/);
    const jar = join(world.home, 'cookies.txt');
    const followed = await curl(['-L', '-c', jar, '-b', jar, `${url}?sbx_token=${token}`]);
    assert.equal(followed.status, 200);
    assert.match(followed.body, /Directory listing/);
    assert.equal((await curl(['-b', jar, url])).status, 200, 'the cookie alone works');
  });

  it('sbx token prints it; --rotate replaces it and the old one stops working at once', async () => {
    assert.equal((await world.sbx(['token', 'priv'])).stdout.trim(), token);
    const rotated = (await world.sbx(['token', 'priv', '--rotate'])).stdout.trim();
    assert.notEqual(rotated, token);
    assert.equal((await curl(['-H', `x-sbx-traffic-token: ${token}`, url])).status, 403);
    assert.equal((await curl(['-H', `x-sbx-traffic-token: ${rotated}`, url])).status, 200);
    token = rotated;
    assert.equal((await world.json(['inspect', 'priv', '--show-token'])).token, rotated);
    assert.equal((await world.json(['inspect', 'priv'])).token, undefined);
  });

  it('the token never reaches the sandbox and is never logged', async () => {
    await world.put('priv', 'echo_server.py', '/srv/echo.py');
    await world.sbx(['exec', '-d', 'priv', '--', 'python3', '/srv/echo.py', '8081']);
    await world.sbx(['port', 'expose', 'priv', '8081', '--private']);
    const u = world.url(8081, 'priv');
    await eventually(listening(u, ['-H', `x-sbx-traffic-token: ${token}`]), 'echo');
    const r = await curl(['-H', `x-sbx-traffic-token: ${token}`, '-H', `Cookie: a=1; sbx_token=${token}`, u]);
    assert.doesNotMatch(r.body, new RegExp(token));
    assert.match(r.body, /"a=1"/);
    assert.doesNotMatch(await world.gatewayLog(), new RegExp(token));
  });

  it('a request without a valid token never wakes a paused sandbox', async () => {
    await world.json(['pause', 'priv']);
    assert.equal((await curl([url])).status, 403);
    assert.equal((await curl(['-H', 'x-sbx-traffic-token: nope', url])).status, 403);
    assert.equal((await world.json(['inspect', 'priv'])).status, 'paused');
    await world.json(['resume', 'priv']);
  });
});

describe('mask-host', () => {
  it("rewrites the Host header sent into the sandbox, ${PORT} replaced", async () => {
    await world.json(['create', '--name', 'masked', '--mask-host', 'localhost:${PORT}']);
    await world.put('masked', 'echo_server.py', '/srv/echo.py');
    await world.sbx(['exec', '-d', 'masked', '--', 'python3', '/srv/echo.py', '8082']);
    await world.sbx(['port', 'expose', 'masked', '8082']);
    const u = world.url(8082, 'masked');
    await eventually(listening(u), 'echo');
    const h = Object.fromEntries(JSON.parse((await curl([u])).body).headers.map(([k, v]: string[]) => [k.toLowerCase(), v]));
    assert.equal(h.host, 'localhost:8082');
    assert.equal(h['x-forwarded-host'], `8082-masked.sbx.localhost:${world.gatewayPort()}`);
  });
});

describe('lifecycle through the gateway', () => {
  let url: string;
  before(async () => {
    const box = await world.json(['create', '--name', 'sleepy', '-p', '3000', '--', 'python3', '-m', 'http.server', '3000']);
    url = box.ports[0].url;
    await eventually(listening(url), 'the server');
  });

  it('a request for a paused sandbox resumes it', async () => {
    await world.json(['pause', 'sleepy']);
    const r = await curl([url]);
    assert.equal(r.status, 200);
    assert.equal((await world.json(['inspect', 'sleepy'])).status, 'running');
  });

  it('a request for a stopped sandbox starts it and waits for its server', async () => {
    await world.json(['stop', 'sleepy']);
    const r = await curl([url]);
    assert.equal(r.status, 200);
    assert.match(r.body, /Directory listing/);
    assert.equal((await world.json(['inspect', 'sleepy'])).status, 'running');
  });

  it('routes survive a gateway restart (everything comes from the store)', async () => {
    const port = world.gatewayPort();
    await world.sbx(['gateway', 'stop']);
    assert.equal((await world.json(['gateway', 'status'])).running, false);
    assert.notEqual((await curl([url])).status, 200);
    const restarted = await world.sbx(['gateway', 'start', '--json'], { env: { SBX_GATEWAY_PORT: String(port) } });
    assert.equal(restarted.code, 0, restarted.stderr);
    assert.equal((await curl([url])).status, 200);
  });

  it('--ttl removes the sandbox when its time is up, and inspect shows when', async () => {
    const box = await world.json(['create', '--name', 'brief', '--ttl', '3s']);
    const expires = Date.parse(box.expiresAt);
    assert.ok(expires > Date.now() && expires <= Date.now() + 3500);
    assert.equal((await world.json(['inspect', 'brief'])).expiresAt, box.expiresAt);
    await eventually(async () => (await world.sbx(['inspect', 'brief'])).code === 3, 'the ttl', 15_000);
    const left = await world.leftovers();
    assert.ok(!left.containers.some((c) => box.container.startsWith(c)));
    assert.equal((await world.sbx(['create', '--ttl', 'soon'])).code, 2);
  });
});

describe('port forward and fetch', () => {
  it('forwards a local TCP port to a non-HTTP service on the sandbox loopback, several connections, bytes unchanged', async () => {
    await world.json(['create', '--name', 'tcp']);
    await world.put('tcp', 'tcp_upper.py', '/srv/upper.py');
    await world.sbx(['exec', '-d', 'tcp', '--', 'python3', '/srv/upper.py', '5432']);
    const { child: fwd, localPort } = await world.forward('tcp', 5432);
    try {
      const talk = (send: string, expectBytes: number) =>
        new Promise<Buffer>((resolve, reject) => {
          const s = createConnection(localPort, '127.0.0.1');
          const chunks: Buffer[] = [];
          let total = 0;
          s.on('data', (d) => {
            chunks.push(d);
            total += d.length;
            if (total >= expectBytes) {
              s.end();
              resolve(Buffer.concat(chunks));
            }
          });
          s.on('error', reject);
          s.write(send);
        });
      let answers: Buffer[] = [];
      await eventually(async () => {
        try {
          answers = await Promise.all([talk('hello one\n', 10), talk('second line\n', 12), talk('BYTES 100000\n', 100000)]);
          return true;
        } catch {
          return false;
        }
      }, 'the tunnel');
      assert.equal(answers[0]!.toString(), 'HELLO ONE\n');
      assert.equal(answers[1]!.toString(), 'SECOND LINE\n');
      assert.ok(answers[2]!.equals(Buffer.from(Array.from({ length: 100000 }, (_, i) => i % 256))));
    } finally {
      fwd.kill('SIGINT');
    }
  });

  it('a loopback-only service that speaks first (an SSH- or SMTP-like greeting): the greeting arrives through the relay, without the client sending anything', async () => {
    const banner = "import socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', 2525)); s.listen(8)\nwhile True:\n    c, _ = s.accept(); c.sendall(b'220 sbx greets you\\r\\n'); c.close()\n";
    await world.sbx(['exec', '-d', 'tcp', '--', 'python3', '-c', banner]);
    const { child: fwd, localPort } = await world.forward('tcp', 2525);
    try {
      const greet = () =>
        new Promise<string>((resolve) => {
          const s = createConnection(localPort, '127.0.0.1');
          let got = '';
          const timer = setTimeout(() => s.destroy(), 5000);
          s.on('data', (d) => (got += d.toString()));
          s.on('close', () => (clearTimeout(timer), resolve(got)));
          s.on('error', () => {});
        });
      await eventually(async () => (await greet()) === '220 sbx greets you\r\n', 'the greeting');
      // Every connection gets it (each is a fresh relayed connection, after a second try of the bridge).
      assert.deepEqual(await Promise.all([greet(), greet(), greet(), greet(), greet()]), Array(5).fill('220 sbx greets you\r\n'));
    } finally {
      fwd.kill('SIGINT');
    }
  });

  it('sbx fetch sends one request through the gateway with the token and prints the body', async () => {
    const r = await world.sbx(['fetch', 'echo', '8080', '/hello?x=1', '-X', 'PUT', '-H', 'X-A: b', '-d', 'payload']);
    assert.equal(r.code, 0, r.stderr);
    const echo = JSON.parse(r.stdout);
    assert.deepEqual([echo.method, echo.path, echo.bodySize], ['PUT', '/hello?x=1', 7]);
    const priv = await world.sbx(['fetch', 'priv', '3000', '-i']);
    assert.equal(priv.code, 0, priv.stderr);
    assert.match(priv.stdout, /^HTTP\/1\.1 200 OK\n/);
    const missing = await world.sbx(['fetch', 'priv', '4999']);
    assert.equal(missing.code, 1);
    assert.match(missing.stdout, /not exposed/);
  });
});
