// Agent mode on the local engine: the CLI speaks only the Docker API and the agent container
// (`sbx-agent-<key>`) does the privileged work (nft, DNS, the proxy, nginx, relays). As root with
// SBX_AGENT=1 and as a user in the docker group: every command, URLs, tunnels, and egress proven
// by real packets from inside sandboxes against the fake internet (test/fake-internet.ts), which is
// also every agent's DNS upstream. Then an older agent replaced while a blocked sandbox keeps
// probing (nothing gets out), a newer one refused, and the failures that must fail closed: an agent
// that cannot start, bundles that cannot make its image, an agent that dies under its sandboxes.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createConnection } from 'node:net';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentBuildId } from '../../src/api/agent-build.ts';
import { BUILT_NGINX, BUILT_NGINX_DIR, BUILT_NGINX_STAMP } from '../../src/core/built-nginx.ts';
import { runAgent } from '../../src/runtime/agent.ts';
import { Runtime } from '../../src/runtime/docker.ts';
import { AgentWorld, type WorldUser } from '../agent-world.ts';
import { forgedProxyLineRefused } from '../h2c-fixture.ts';
import { connect as connectHttp2 } from 'node:http2';
import { FAKE_HOST_LINK_IP, startFakeInternet, type FakeInternet } from '../fake-internet.ts';
import { chainOf, curl, docker, eventually, oneErrorLine, ROOT, run, SBX, sleep, type Result } from '../helpers.ts';
import { addUser as makeUser, removeUser, sweepUsers } from '../test-users.ts';

/** A user made by this file, removed after it. */
async function addUser(groups: string[]): Promise<WorldUser> {
  const user = await makeUser(groups);
  users.push(user);
  return user;
}

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const BUILD = agentBuildId(join(ROOT, 'dist'));
const DOCKER_SOCKET = '/var/run/docker.sock';
const PYTHON = '/usr/bin/python3';
const scratch = mkdtempSync(join(tmpdir(), 'sbx-agent-test-'));

let fi: FakeInternet;
const worlds: AgentWorld[] = [];
const users: WorldUser[] = [];

/** An agent world whose agent resolves through the fake internet (no DNS query leaves the machine). */
function agentWorld(env: Record<string, string> = {}, options: ConstructorParameters<typeof AgentWorld>[1] = {}): AgentWorld {
  const w = new AgentWorld({ SBX_DNS_UPSTREAM: fi.dnsUpstream, ...env }, options);
  worlds.push(w);
  return w;
}

// ---- local users -----------------------------------------------------------------------------

/** A command as `user` (their groups, a clean environment). */
function asUser(user: WorldUser, cmd: string[], env: Record<string, string> = {}): Promise<Result> {
  const vars = Object.entries({ HOME: user.home, USER: user.name, PATH: '/usr/local/bin:/usr/bin:/bin', ...env }).map(([k, v]) => `${k}=${v}`);
  return run('setpriv', ['--reuid', String(user.uid), '--regid', String(user.gid), '--init-groups', 'env', '-i', ...vars, ...cmd]);
}

/** Whether `user` can connect to a unix socket: 'ok' or the Python exception's name. */
async function socketAs(user: WorldUser, path: string): Promise<string> {
  const script = 'import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect(sys.argv[1]); print("ok")\nexcept OSError as e:\n print(type(e).__name__)';
  return (await asUser(user, [PYTHON, '-c', script, path])).stdout.trim();
}

// ---- probes from inside ----------------------------------------------------------------------

const sh = async (w: AgentWorld, box: string, script: string) => (await w.sbx(['exec', box, '--', 'sh', '-c', script])).stdout.trim();
const probe = (w: AgentWorld, box: string, ...args: string[]) => sh(w, box, `python3 /probe.py ${args.join(' ')}`);

/** Judges a `probe.py connect` line: 'ok' or 'fail', and a refusal must be fast, never a timeout. */
function verdict(line: string, what: string): 'ok' | 'fail' {
  const [v, ...rest] = line.split(' ');
  const ms = Number(rest[rest.length - 1]);
  assert.ok(v === 'ok' || v === 'fail', `${what}: ${line}`);
  assert.ok(ms < 2000, `${what} took ${ms} ms (${line}): a block must fail fast`);
  if (v === 'fail') assert.notEqual(rest[0], 'TIMEOUT', `${what} timed out instead of being refused`);
  return v;
}

const tcp = async (w: AgentWorld, box: string, host: string, port: number) => verdict(await probe(w, box, 'connect', host, String(port)), `connect ${host}:${port}`);

/** curl inside the sandbox: the body on success, undefined on failure (a proxy's 403 included). */
async function get(w: AgentWorld, box: string, url: string, ...extra: string[]): Promise<string | undefined> {
  const r = await w.sbx(['exec', box, '--', 'curl', '-s', '-f', '-m', '5', ...extra, url]);
  return r.code === 0 ? r.stdout.trim() : undefined;
}

/** The same probes through the engine alone (`docker exec`): no sbx command, so no agent is started. */
const dprobe = async (container: string, ...args: string[]) => (await docker('exec', container, 'python3', '/probe.py', ...args)).stdout.trim();
const dcurl = async (container: string, ...args: string[]) => docker('exec', container, 'curl', '-s', '-f', '-m', '5', ...args);

async function create(w: AgentWorld, name: string, flags: string[] = [], tail: string[] = []): Promise<any> {
  const box = await w.json(['create', '--name', name, ...flags, ...tail]);
  await w.put(name, 'probe.py', '/probe.py');
  return box;
}

/** The host's address on a sandbox's bridge (its resolver). */
async function bridgeIp(w: AgentWorld, box: string): Promise<string> {
  return /nameserver (\S+)/.exec(await sh(w, box, 'cat /etc/resolv.conf'))![1]!;
}

async function inspect(name: string): Promise<any | undefined> {
  const r = await docker('inspect', name);
  return r.code === 0 ? JSON.parse(r.stdout)[0] : undefined;
}

/** Whether a unix socket takes a connection (as root). */
function accepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** Whether a sandbox's rules are in this kernel (its chains in sbx's table). */
const hasRules = async (id: string) => (await run('nft', chainOf(id))).code === 0;

/** One line on stderr, starting with `error:`. */
function oneLineError(r: Result): string {
  const lines = r.stderr.split('\n').filter(Boolean);
  assert.equal(lines.length, 1, `one line expected:\n${r.stderr}`);
  assert.match(lines[0]!, /^error: /);
  return lines[0]!;
}

// ---- the file ----------------------------------------------------------------------------------

before(async () => {
  await sweepUsers();
  fi = await startFakeInternet();
});

after(async () => {
  for (const w of worlds) await w.cleanup();
  for (const u of users) await removeUser(u.name);
  await fi?.stop();
  rmSync(scratch, { recursive: true, force: true });
  // Nothing of this file is left: agents, volumes, socket directories, homes, users.
  for (const w of worlds) {
    assert.equal(await inspect(w.names.container), undefined, `${w.names.container} is left`);
    assert.notEqual((await docker('volume', 'inspect', w.names.volume)).code, 0, `${w.names.volume} is left`);
    assert.ok(!existsSync(w.names.socketDir), `${w.names.socketDir} is left`);
    assert.ok(!existsSync(w.home), `${w.home} is left`);
  }
  for (const u of users) assert.notEqual((await run('id', [u.name])).code, 0, `the user ${u.name} is left`);
});

describe('root with SBX_AGENT=1: the CLI needs only the Docker API', () => {
  let w: AgentWorld;
  let host: Server;
  let hostPort = 0;
  let web: any;
  let priv: any;
  let token = '';
  // nft for this CLI process: it records the call and fails. The agent has its own nft.
  const nftCalls = join(scratch, 'nft-calls');
  const nft = join(scratch, 'nft');
  writeFileSync(nft, `#!/bin/sh\necho "$*" >> ${nftCalls}\nexit 1\n`);
  chmodSync(nft, 0o755);

  before(async () => {
    // Without the sbin directories on PATH, and SBX_NFT pointing at the recorder.
    w = agentWorld({ SBX_NFT: nft, PATH: '/usr/bin:/bin' });
    host = createServer((_req, res) => res.end('host service\n'));
    await new Promise<void>((r) => host.listen(0, '0.0.0.0', r));
    hostPort = (host.address() as { port: number }).port;
  });
  after(() => host?.close());

  it('create -p --name: a running sandbox whose URL carries the agent gateway\'s real port', async () => {
    web = await create(w, 'web', ['-p', '8080'], ['--', 'python3', '-m', 'http.server', '8080']);
    assert.equal(web.status, 'running');
    assert.deepEqual(web.command, ['python3', '-m', 'http.server', '8080']);
    assert.equal(web.ports.length, 1);
    const m = /^http:\/\/8080-web\.sbx\.localhost:(\d+)\/$/.exec(web.ports[0].url);
    assert.ok(m, web.ports[0].url);
    assert.equal(Number(m[1]), (await w.gatewayState()).port);
    assert.notEqual(Number(m[1]), 0);
    // The sandbox is the agent's: its labels name the agent's home (its volume), not this client's.
    const labels = (await inspect(web.container)).Config.Labels;
    assert.equal(labels['sbx.home'], await w.agentHome());
    assert.equal(labels['sbx.name'], 'web');
  });

  it('ls --json and inspect --json', async () => {
    const list = await w.json<any[]>(['ls']);
    assert.deepEqual(list.map((b) => [b.name, b.id, b.status]), [['web', web.id, 'running']]);
    const one = await w.json(['inspect', 'web']);
    assert.equal(one.id, web.id);
    assert.deepEqual(one.ports, web.ports);
    assert.equal(one.network.mode, 'allow-all');
  });

  it('exec: stdout and stderr apart, the exit code, stdin with -i', async () => {
    const r = await w.sbx(['exec', 'web', '--', 'sh', '-c', 'echo out; echo err >&2; exit 7']);
    assert.deepEqual([r.code, r.stdout, r.stderr], [7, 'out\n', 'err\n']);
    const i = await w.sbx(['exec', '-i', 'web', '--', 'wc', '-c'], { input: 'data\n' });
    assert.equal(i.stdout.trim(), '5');
  });

  it('the URL answers curl on the host; a private port refuses without the token and accepts with it', async () => {
    const url = web.ports[0].url;
    await eventually(async () => (await curl([url])).status === 200, 'the server behind the URL');
    assert.match((await curl([url])).body, /Directory listing/);
    // h2c on the same URL: the agent's gateway takes it as a host's does (nginx 1.26 itself).
    const h2 = await run('curl', ['-sS', '--http2-prior-knowledge', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', url]);
    assert.equal(h2.stdout, '2 200', h2.stderr);
    await w.sbx(['exec', '-d', 'web', '--', 'python3', '-m', 'http.server', '9000']);
    [priv] = await w.json<any[]>(['port', 'expose', 'web', '9000', '--private']);
    assert.equal(priv.public, false);
    token = (await w.sbx(['token', 'web'])).stdout.trim();
    assert.match(token, /^\S{20,}$/);
    await eventually(async () => (await curl(['-H', `x-sbx-traffic-token: ${token}`, priv.url])).status === 200, 'the private port with the token');
    const without = await curl([priv.url]);
    assert.equal(without.status, 403);
    assert.equal(without.headers['x-sbx-error'], 'token_missing');
    const wrong = await curl(['-H', 'x-sbx-traffic-token: not-the-token', priv.url]);
    assert.equal(wrong.status, 403);
    assert.equal(wrong.headers['x-sbx-error'], 'token_invalid');
  });

  it('attack on the agent\'s nginx 1.26 (its h2c parser): a forged PROXY line is a 400; one HTTP/2 connection opened for the public port gets 403 for the private one without the token (200 with it: control)', async () => {
    const gw = Number(new URL(web.ports[0].url).port);
    await forgedProxyLineRefused(gw);
    const session = connectHttp2(`http://127.0.0.1:${gw}`);
    const status = (headers: Record<string, string>) =>
      new Promise<number>((resolve, reject) => {
        const req = session.request({ ':method': 'GET', ':path': '/', ...headers });
        req.on('response', (h) => resolve(Number(h[':status'])));
        req.on('error', reject);
        req.resume();
        req.end();
      });
    try {
      assert.equal(await status({ ':authority': new URL(web.ports[0].url).host }), 200);
      assert.equal(await status({ ':authority': new URL(priv.url).host }), 403);
      assert.equal(await status({ ':authority': new URL(priv.url).host, 'x-sbx-traffic-token': token }), 200);
    } finally {
      session.close();
    }
  });

  it('sbx fetch goes through the agent\'s tunnel (the token is added); an unexposed port exits 1', async () => {
    const r = await w.sbx(['fetch', 'web', '9000', '/']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Directory listing/);
    const missing = await w.sbx(['fetch', 'web', '4999']);
    assert.equal(missing.code, 1);
    assert.match(missing.stdout, /not exposed/);
  });

  it('sbx port forward carries bytes through the tunnel to a loopback-only server (the agent\'s relay)', async () => {
    await w.put('web', 'tcp_upper.py', '/srv/upper.py');
    await w.sbx(['exec', '-d', 'web', '--', 'python3', '/srv/upper.py', '5432']);
    const { child: fwd, localPort } = await w.forward('web', 5432);
    try {
      const talk = (line: string) =>
        new Promise<string>((resolve, reject) => {
          const s = createConnection(localPort, '127.0.0.1');
          let got = '';
          s.on('data', (d) => {
            got += d;
            if (got.endsWith('\n')) {
              s.end();
              resolve(got);
            }
          });
          s.on('error', reject);
          s.on('close', () => reject(new Error(`closed after ${JSON.stringify(got)}`)));
          s.write(line);
        });
      let answers: string[] = [];
      await eventually(async () => {
        answers = await Promise.all([talk('hello agent\n'), talk('second one\n')]).catch(() => []);
        return answers.length === 2;
      }, 'the tunnel');
      assert.deepEqual(answers, ['HELLO AGENT\n', 'SECOND ONE\n']);
    } finally {
      fwd.kill('SIGINT');
    }
  });

  it('port ls, port rm (the route is gone at once)', async () => {
    assert.deepEqual((await w.json<any[]>(['port', 'ls', 'web'])).map((p) => [p.port, p.public]), [[8080, true], [9000, false]]);
    assert.deepEqual(await w.json(['port', 'rm', 'web', '9000']), [{ port: 9000, removed: true }]);
    const gone = await curl(['-H', `x-sbx-traffic-token: ${token}`, priv.url]);
    assert.equal(gone.status, 404);
    assert.equal(gone.headers['x-sbx-error'], 'port_not_exposed');
    assert.deepEqual((await w.json<any[]>(['port', 'ls', 'web'])).map((p) => p.port), [8080]);
  });

  it('stop and start (the server comes back with its sandbox), pause and resume', async () => {
    assert.equal((await w.json(['stop', 'web'])).status, 'stopped');
    assert.equal((await inspect(web.container)).State.Running, false);
    assert.equal((await w.json(['start', 'web'])).status, 'running');
    await eventually(async () => (await curl([web.ports[0].url])).status === 200, 'the server after start');
    assert.equal((await w.json(['pause', 'web'])).status, 'paused');
    assert.equal((await inspect(web.container)).State.Paused, true);
    assert.equal((await w.json(['resume', 'web'])).status, 'running');
    assert.equal((await w.sbx(['exec', 'web', '--', 'echo', 'thawed'])).stdout, 'thawed\n');
  });

  it("attack: from inside, the host's ports (its services, the agent's gateway and egress listeners) are refused", async () => {
    const bridge = await bridgeIp(w, 'web');
    const gw = await w.gatewayState();
    // Control: the sandbox's packets do leave (allow-all is the internet), and the host's service answers the host.
    assert.equal(await tcp(w, 'web', '198.18.0.1', 8080), 'ok');
    assert.equal((await curl([`http://${bridge}:${hostPort}/`])).body, 'host service\n');
    for (const port of [hostPort, gw.port, gw.egress.http, gw.egress.tls]) assert.equal(await tcp(w, 'web', bridge, port), 'fail', `${bridge}:${port}`);
    assert.equal(await tcp(w, 'web', FAKE_HOST_LINK_IP, hostPort), 'fail', 'the host by its address on another link');
    assert.equal(await probe(w, 'web', 'resolve', 'rebind.test'), 'fail -5', 'a name for the host\'s loopback does not resolve there');
  });

  it('control: host:PORT opens exactly that port of the host, and unblock closes it again', async () => {
    const bridge = await bridgeIp(w, 'web');
    await w.json(['network', 'update', 'web', '--allow-out', `host:${hostPort}`]);
    assert.equal(await get(w, 'web', `http://${bridge}:${hostPort}/`), 'host service');
    assert.equal(await tcp(w, 'web', bridge, (await w.gatewayState()).egress.http), 'fail');
    await w.json(['network', 'unblock', 'web']);
    assert.equal(await tcp(w, 'web', bridge, hostPort), 'fail');
  });

  it('egress: --block-network --allow-out, network update, block and unblock, proven by packets', async () => {
    await create(w, 'locked', ['--block-network', '--allow-out', 'allowed.test']);
    await fi.clearQueries();
    // Control: the allowed name, by name.
    assert.equal(await get(w, 'locked', 'http://allowed.test/'), '198.18.0.1 80 allowed.test');
    // Attack: another name, the address on another port, UDP, DNS straight to a resolver.
    assert.equal(await get(w, 'locked', 'http://other.test/'), undefined);
    assert.equal(await tcp(w, 'locked', '198.18.0.3', 8080), 'fail');
    assert.match(await probe(w, 'locked', 'udp', '198.18.0.3', '9999'), /^fail/);
    assert.match(await probe(w, 'locked', 'dns', '198.18.0.53', 'leak.test'), /^fail/);
    assert.deepEqual((await fi.queries()).filter((q) => q !== 'allowed.test'), [], 'only the allowed name was asked upstream');
    // network update replaces the whole policy.
    const p = await w.json(['network', 'update', 'locked', '--mode', 'block-all', '--allow-out', 'other.test']);
    assert.deepEqual(p, { mode: 'block-all', allowOut: ['other.test'], denyOut: [], allowPorts: [], denyPorts: [] });
    assert.equal(await get(w, 'locked', 'http://other.test/'), '198.18.0.3 80 other.test');
    assert.equal(await get(w, 'locked', 'http://allowed.test/'), undefined);
    // block: nothing at all.
    assert.equal((await w.json(['network', 'block', 'locked'])).mode, 'block-all');
    assert.equal(await get(w, 'locked', 'http://other.test/'), undefined);
    assert.equal(await tcp(w, 'locked', '198.18.0.3', 8080), 'fail');
    // unblock: the internet.
    assert.equal((await w.json(['network', 'unblock', 'locked'])).mode, 'allow-all');
    assert.equal(await tcp(w, 'locked', '198.18.0.3', 8080), 'ok');
    assert.equal(await get(w, 'locked', 'http://denied.test:8080/'), '198.18.0.2 8080 denied.test:8080');
  });

  it('the agent container: labelled with version and build, host network and pids, only NET_ADMIN and SYS_ADMIN added', async () => {
    const a = await inspect(w.names.container);
    assert.equal(a.Config.Labels['sbx.version'], VERSION);
    assert.equal(a.Config.Labels['sbx.build'], BUILD);
    assert.equal(a.Config.Labels['sbx.agent'], 'true');
    assert.equal(a.Config.Image, `sbx/agent:${BUILD}`);
    assert.deepEqual([...a.HostConfig.CapAdd].sort(), ['NET_ADMIN', 'SYS_ADMIN']);
    assert.ok(!a.HostConfig.CapDrop?.length);
    assert.equal(a.HostConfig.Privileged, false);
    assert.deepEqual([a.HostConfig.NetworkMode, a.HostConfig.PidMode, a.HostConfig.RestartPolicy.Name], ['host', 'host', 'unless-stopped']);
    const mounts = Object.fromEntries(a.Mounts.map((m: any) => [m.Destination, m.Name ?? m.Source]));
    assert.equal(mounts[(await w.agentHome())!], w.names.volume, 'the volume at its own host path');
    assert.equal(mounts['/var/run/docker.sock'], DOCKER_SOCKET);
    assert.equal(mounts['/run/sbx-agent'], w.names.socketDir);
  });

  it('rm -f leaves nothing: no container, network or nft table', async () => {
    for (const box of ['web', 'locked']) {
      const info = await w.json(['inspect', box]);
      assert.ok(await hasRules(info.id), 'the control: its rules are there before');
      assert.deepEqual(await w.json(['rm', '-f', box]), { id: info.id, name: box, removed: true });
      assert.equal(await inspect(info.container), undefined);
      assert.notEqual((await docker('network', 'inspect', info.dockerNetwork)).code, 0);
      assert.equal(await hasRules(info.id), false);
    }
    assert.deepEqual(await w.json(['ls']), []);
    assert.deepEqual(await w.leftovers(), { containers: [], networks: [], tables: [] });
  });

  it('gateway status names the agent; gateway stop stops it, status says so without starting it, and the next command starts it again', async () => {
    assert.equal((await w.json(['gateway', 'status'])).agent, w.names.container);
    assert.equal((await w.sbx(['gateway', 'stop'])).code, 0);
    assert.equal((await inspect(w.names.container)).State.Running, false);
    const stopped = await w.json(['gateway', 'status']);
    assert.deepEqual([stopped.running, stopped.agent], [false, w.names.container]);
    assert.equal((await inspect(w.names.container)).State.Running, false, 'gateway status did not start it');
    assert.equal((await w.sbx(['ls'])).code, 0);
    assert.equal((await inspect(w.names.container)).State.Running, true);
  });

  it('h2c: the agent\'s gateway (nginx 1.26 from its image, as on a host: no HAProxy) says h2c true, and false with SBX_GATEWAY_H2C=0 (a setting of the agent: it is replaced); SBX_TLS_CERT or a domain that cannot have sbx\'s CA with SBX_GATEWAY_TLS=1, and a bad SBX_GATEWAY_SOURCE_LIMIT, exit 2 in one line, before any agent work', async () => {
    const status = await w.json(['gateway', 'status']);
    assert.deepEqual([status.h2c, status.h2cBy], [true, existsSync(BUILT_NGINX) ? 'nginx' : 'haproxy']);
    if (existsSync(BUILT_NGINX)) {
      // The image carries the host's build where findNginx looks first; the agent runs it, alone.
      const procs = (await run('docker', ['exec', w.names.container, 'ps', '-eo', 'args'])).stdout;
      assert.match(procs, new RegExp(`nginx: master process ${BUILT_NGINX}`), procs);
      assert.doesNotMatch(procs, /haproxy/, procs);
      const stamp = join(BUILT_NGINX_DIR, BUILT_NGINX_STAMP);
      assert.equal((await run('docker', ['exec', w.names.container, 'cat', stamp])).stdout, readFileSync(stamp, 'utf8'));
    }
    const off = await w.json(['gateway', 'status'], { env: { SBX_GATEWAY_H2C: '0' } });
    assert.deepEqual([off.h2c, off.h2cBy], [false, undefined]);
    assert.equal((await w.json(['gateway', 'status'])).h2c, true);
    const tlsFiles = { SBX_GATEWAY_TLS: '1', SBX_TLS_CERT: '/etc/hostname', SBX_TLS_KEY: '/etc/hostname' };
    const agentId = (await inspect(w.names.container)).Id;
    for (const [env, what] of [
      [tlsFiles, /^error: SBX_TLS_CERT and SBX_TLS_KEY are not served behind the agent .*sbx ca prints it/],
      [{ SBX_GATEWAY_TLS: '1', SBX_DOMAIN: 'example.com' }, /^error: SBX_DOMAIN "example\.com" cannot have sbx's CA/],
      [{ SBX_GATEWAY_SOURCE_LIMIT: 'lots' }, /^error: invalid SBX_GATEWAY_SOURCE_LIMIT "lots": use 0 \(no limit\) to 100000/],
    ] as const) {
      const r = await w.sbx(['ls'], { env });
      assert.equal(r.code, 2, r.stderr);
      assert.match(oneErrorLine(r), what);
    }
    assert.equal((await inspect(w.names.container)).Id, agentId, 'the agent was not replaced');
  });

  it('this CLI process ran no nft: everything kernel-side was the agent\'s', () => {
    assert.equal(existsSync(nftCalls) ? readFileSync(nftCalls, 'utf8') : '', '');
  });
});

describe('a user in the docker group (not root, no SBX_AGENT): agent mode by default', () => {
  let member: WorldUser;
  let outsider: WorldUser;
  let w: AgentWorld;
  let box: any;

  before(async () => {
    member = await addUser([(await run('getent', ['group', String(statSync(DOCKER_SOCKET).gid)])).stdout.split(':')[0]!]);
    outsider = await addUser([]);
    w = agentWorld({ SBX_AGENT: '' }, { user: member });
  });

  it('the user can run bin/sbx and its Node', async () => {
    const node = join(ROOT, '.tools', 'node_modules', 'node', 'bin', 'node');
    const script = `test -x ${SBX} && test -r ${join(ROOT, 'dist', 'cli.cjs')} && { [ ! -e ${node} ] || test -x ${node}; }`;
    assert.equal((await asUser(member, ['/bin/sh', '-c', script])).code, 0);
    assert.equal((await w.sbx(['--version'])).stdout.trim(), VERSION);
  });

  it('gets a working sandbox through its own agent: create, exec, a URL', async () => {
    box = await create(w, 'mine', ['-p', '8000'], ['--', 'python3', '-m', 'http.server', '8000']);
    assert.equal(box.status, 'running');
    assert.equal((await w.sbx(['exec', 'mine', '--', 'sh', '-c', 'echo hi from $(id -un)'])).stdout, 'hi from root\n');
    assert.equal((await w.json(['gateway', 'status'])).agent, w.names.container, 'the agent named after this uid');
    const fetchAs = () => asUser(member, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '5', box.ports[0].url]);
    await eventually(async () => (await fetchAs()).stdout === '200', 'the URL, fetched by the user');
  });

  it('attack: the user connecting to the sandbox directly, around the gateway, is refused', async () => {
    const r = await asUser(member, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '5', `http://${box.ip}:8000/`]);
    assert.equal(r.stdout, '000');
    assert.equal(r.code, 7, 'refused, not timed out');
    // Control: the server does listen there, and root (the agent's side) may connect.
    assert.equal((await curl([`http://${box.ip}:8000/`])).status, 200);
  });

  it('block-all, proven by packets, with its control', async () => {
    await fi.clearQueries();
    assert.equal((await w.json(['network', 'block', 'mine'])).mode, 'block-all');
    assert.equal(await tcp(w, 'mine', '198.18.0.1', 8080), 'fail');
    assert.equal(await tcp(w, 'mine', '198.18.0.1', 80), 'fail');
    assert.match(await probe(w, 'mine', 'udp', '198.18.0.1', '9999'), /^fail/);
    assert.match(await probe(w, 'mine', 'dns', '198.18.0.53', 'leak.test'), /^fail/);
    assert.match(await probe(w, 'mine', 'resolve', 'allowed.test'), /^fail/);
    assert.deepEqual(await fi.queries(), []);
    // Control: unblocked, the same probes get out; blocked again, they do not.
    await w.json(['network', 'unblock', 'mine']);
    assert.equal(await tcp(w, 'mine', '198.18.0.1', 8080), 'ok');
    assert.equal(await probe(w, 'mine', 'resolve', 'allowed.test'), 'ok 198.18.0.1');
    await w.json(['network', 'block', 'mine']);
    assert.equal(await tcp(w, 'mine', '198.18.0.1', 8080), 'fail');
    // Inbound traffic to the exposed port works in every mode.
    assert.equal((await curl([box.ports[0].url])).status, 200);
  });

  it('HTTPS (SBX_GATEWAY_TLS=1): the agent makes its sbx CA, sbx ca hands the user its certificate (never its key), and the URL checks out against it', async () => {
    const tls = { SBX_GATEWAY_TLS: '1' };
    const status = await w.json(['gateway', 'status'], { env: tls });
    assert.deepEqual([status.tls, status.h2c, status.h2cBy, status.url.startsWith('https://')], [true, false, undefined, true]);
    const url = (await w.json(['port', 'ls', 'mine'], { env: tls }))[0].url as string;
    assert.match(url, /^https:\/\/8000-mine\.sbx\.localhost:\d+\/$/);
    const ca = await w.sbx(['ca'], { env: tls });
    assert.equal(ca.code, 0, ca.stderr);
    const path = ca.stdout.trim();
    assert.ok(path.startsWith(`${w.home}/`), `a file of the user's SBX_HOME: ${path}`);
    const pem = (await asUser(member, ['cat', path])).stdout;
    assert.match(pem, /^-----BEGIN CERTIFICATE-----/);
    assert.doesNotMatch(pem, /PRIVATE KEY/);
    assert.equal(statSync(path).uid, member.uid);
    // The key stays in the agent's volume, 0600, out of the user's reach.
    const keyPath = join((await w.agentHome())!, 'tls', 'ca', 'sbx.localhost', 'ca-key.pem');
    assert.equal(statSync(keyPath).mode & 0o777, 0o600);
    assert.notEqual((await asUser(member, ['cat', keyPath])).code, 0);
    // The user's curl trusts the copy; without it (the system's store only) the certificate is refused.
    const get = (...extra: string[]) => asUser(member, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code} %{http_version}', '-m', '5', ...extra, url]);
    await eventually(async () => (await get('--cacert', path)).stdout === '200 2', 'the HTTPS URL, checked against the copy (HTTP/2 by ALPN)');
    const unchecked = await get();
    assert.equal(unchecked.code, 60, 'curl refuses a certificate it cannot check');
    // sbx fetch checks it too, through the agent's tunnel, HTTP/1.1 and HTTP/2.
    for (const [args, line] of [[[], /^HTTP\/1\.1 200 OK\n/], [['--http2'], /^HTTP\/2 200\n/]] as const) {
      const r = await w.sbx(['fetch', 'mine', '8000', '/', '-i', ...args], { env: tls });
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, line);
    }
    // Control: the plain-HTTP gateway again (the agent is replaced with it, on a port of its own).
    assert.equal((await w.json(['gateway', 'status'])).tls, undefined);
    const plain = (await w.json(['port', 'ls', 'mine']))[0].url as string;
    assert.match(plain, /^http:\/\//);
    await eventually(async () => (await asUser(member, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '5', plain])).stdout === '200', 'the http URL again');
  });

  it("the control socket is 0660 with the docker socket's group; a user outside that group can use neither", async () => {
    const path = join(w.names.socketDir, 'control.sock');
    const st = statSync(path);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);
    assert.deepEqual([st.uid, st.gid], [0, statSync(DOCKER_SOCKET).gid]);
    // Control: the member can.
    assert.equal(await socketAs(member, path), 'ok');
    assert.equal((await asUser(member, ['curl', '-s', '-m', '5', '--unix-socket', DOCKER_SOCKET, 'http://docker/_ping'])).stdout, 'OK');
    // Attack: the outsider cannot, neither the agent's socket nor the engine's, nor sbx.
    assert.equal(await socketAs(outsider, path), 'PermissionError');
    const ping = await asUser(outsider, ['curl', '-s', '-m', '5', '--unix-socket', DOCKER_SOCKET, 'http://docker/_ping']);
    assert.notEqual(ping.stdout, 'OK');
    const r = await asUser(outsider, [SBX, 'ls'], { SBX_HOME: join(outsider.home, 'sbx') });
    assert.equal(r.code, 1);
    assert.match(oneLineError(r), /does not let this user in \(EACCES\): run sbx as root or as a member of the docker group/);
  });
});

describe('versions: an older agent is replaced with no gap in the rules, a newer one is refused', () => {
  const runtime = new Runtime();
  let w: AgentWorld;
  let held: any;
  let open: any;

  /** Replaces the world's agent by one with the same image, settings and flags (runAgent), but other labels. */
  async function fakeAgent(labels: Record<string, string>, env: Record<string, string> = {}): Promise<string> {
    const current = await inspect(w.names.container);
    const oldPid = (await w.gatewayState()).pid;
    await docker('rm', '-f', w.names.container);
    const home = (await w.agentHome())!;
    const spec = {
      name: w.names.container,
      image: current.Config.Image,
      volume: w.names.volume,
      engineSockets: [DOCKER_SOCKET],
      socketDir: w.names.socketDir,
      env: { ...Object.fromEntries(current.Config.Env.map((e: string) => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)])), ...env },
      labels: { ...current.Config.Labels, ...labels },
    };
    await runAgent(runtime, spec, home);
    // Up when its gateway has written its state and its control socket answers.
    const socket = join(w.names.socketDir, 'control.sock');
    await eventually(async () => {
      const pid = await w.gatewayState().then((s) => s.pid, () => oldPid);
      return pid !== oldPid && (await accepts(socket));
    }, 'the fake agent', 30_000);
    return (await inspect(w.names.container)).Id;
  }

  /** Starts poll_egress.py in a sandbox's container (through the engine: no sbx command). */
  async function startPoll(box: any, tag: string): Promise<() => Promise<string[]>> {
    const r = await docker('exec', '-d', box.container, 'python3', '/poll.py', '/tmp/poll.out', '/tmp/poll.stop', tag, '120');
    assert.equal(r.code, 0, r.stderr);
    // Every probe has ended once before anything is measured (a busy machine starts Python slowly).
    await eventually(async () => {
      const lines = (await docker('exec', box.container, 'cat', '/tmp/poll.out')).stdout;
      return ['tcp', 'udp', 'dns', 'dns-sbx'].every((p) => new RegExp(`^\\d+ ${p} `, 'm').test(lines));
    }, `every probe in ${box.name}`);
    return async () => {
      await docker('exec', box.container, 'touch', '/tmp/poll.stop');
      let out: string[] = [];
      await eventually(async () => {
        out = (await docker('exec', box.container, 'cat', '/tmp/poll.out')).stdout.split('\n').filter(Boolean);
        return out.at(-1) === '#done';
      }, `the poller in ${box.name}`);
      await docker('exec', box.container, 'rm', '-f', '/tmp/poll.out', '/tmp/poll.stop');
      return out.slice(0, -1);
    };
  }

  before(async () => {
    w = agentWorld();
    held = await create(w, 'held', ['--block-network']);
    open = await create(w, 'open');
    for (const b of ['held', 'open']) await w.put(b, 'poll_egress.py', '/poll.py');
  });

  it('an older agent (sbx.version 0.0.1, build old000000000) is replaced by the next command, which works', async (t) => {
    const fake = await fakeAgent({ 'sbx.version': '0.0.1', 'sbx.build': 'old000000000' });
    assert.equal((await inspect(w.names.container)).Config.Labels['sbx.version'], '0.0.1');
    await fi.clearQueries();
    await fi.clearRequests();
    const stopHeld = await startPoll(held, 'held');
    const stopOpen = await startPoll(open, 'open');
    await sleep(1000);
    // The fake differs from this build only in its labels, which the client reads on the engine's
    // API path (SBX_AGENT_VIA=exec; on the local socket it trusts the hello, which names the real build).
    const from = Date.now();
    const ls = await w.sbx(['ls', '--json'], { env: { SBX_AGENT_VIA: 'exec' } });
    const to = Date.now();
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual(JSON.parse(ls.stdout).map((b: any) => [b.name, b.status]).sort(), [['held', 'running'], ['open', 'running']]);
    await sleep(1500);
    const heldLines = await stopHeld();
    const openLines = await stopOpen();

    const agent = await inspect(w.names.container);
    assert.notEqual(agent.Id, fake);
    assert.equal(agent.Config.Labels['sbx.build'], BUILD);
    assert.equal(agent.Config.Labels['sbx.version'], VERSION);
    assert.ok(agent.State.Running);

    const during = (lines: string[]) => lines.map((l) => l.split(' ')).filter(([t]) => Number(t) >= from && Number(t) <= to);
    const count = (lines: string[][], probe: string) => lines.filter(([, p]) => p === probe).length;
    const heldDuring = during(heldLines);
    const openDuring = during(openLines);
    // Every probe ran all through the swap (TCP is refused at once: many; the others wait out the
    // kernel's rate limit on ICMP errors, 0.5 s each: one ended before the swap, one after it, and
    // none of their gaps in between is longer than a probe's wait, however short the swap was).
    const allThrough = (lines: string[], probe: string) => {
      const times = lines.map((l) => l.split(' ')).filter(([, p]) => p === probe).map(([ms]) => Number(ms));
      const first = times.filter((ms) => ms <= from).at(-1);
      const last = times.find((ms) => ms >= to);
      if (first === undefined || last === undefined) return false;
      const span = times.filter((ms) => ms >= first && ms <= last);
      return span.every((ms, i) => i === 0 || ms - span[i - 1]! <= 1500);
    };
    for (const [lines, inSwap] of [[heldLines, heldDuring], [openLines, openDuring]] as const) {
      for (const probe of ['tcp', 'udp', 'dns', 'dns-sbx']) assert.ok(allThrough(lines, probe), `${probe} probes did not run all through the swap of ${to - from} ms (${count(inSwap, probe)} during it)`);
    }
    const sbxDnsDown = openDuring.filter(([, p, v]) => p === 'dns-sbx' && v !== 'ok').map(([ms]) => Number(ms));
    t.diagnostic(`swap ${to - from} ms; probes during it: blocked ${heldDuring.length}, open ${openDuring.length}; the open sandbox's DNS through sbx failed ${sbxDnsDown.length} times over ${sbxDnsDown.length ? sbxDnsDown.at(-1)! - sbxDnsDown[0]! : 0} ms`);
    // The blocked sandbox: not one probe got anything back, before, during or after the swap.
    assert.deepEqual(heldLines.filter((l) => !l.endsWith(' fail')), [], 'the blocked sandbox got something out');
    // Control: the open sandbox's kernel path stayed open all along (the rules are in the kernel),
    // while sbx's DNS forwarder may have been down for a moment (refused, not opened).
    for (const probe of ['tcp', 'udp', 'dns']) {
      assert.deepEqual(openDuring.filter(([, p, v]) => p === probe && v !== 'ok'), [], `the open sandbox's ${probe} probe during the swap`);
    }
    assert.ok(openLines.some((l) => l.endsWith('dns-sbx ok')), 'the open sandbox resolves through sbx');
    // What the fake internet saw: the open sandbox, never the blocked one.
    const requests = await fi.requests();
    assert.ok(requests.some((r) => r.includes('open.poll.test')));
    assert.deepEqual(requests.filter((r) => r.includes('held.poll.test')), []);
    const queries = await fi.queries();
    assert.ok(queries.includes('open.poll.test'));
    assert.ok(!queries.includes('held.poll.test'));
  });

  it('after the swap: the new agent serves the same sandboxes and policies', async () => {
    assert.equal(await tcp(w, 'held', '198.18.0.1', 8080), 'fail');
    assert.equal(await tcp(w, 'open', '198.18.0.1', 8080), 'ok');
    assert.equal(await probe(w, 'open', 'resolve', 'allowed.test'), 'ok 198.18.0.1');
  });

  it('a newer agent (sbx.version 99.0.0) is refused, naming both versions, exit 1; it is left running', async () => {
    // Its hello names other settings, as a newer build's would: the socket path asks the engine too.
    const newer = await fakeAgent({ 'sbx.version': '99.0.0', 'sbx.build': 'new000000000' }, { SBX_AGENT_CONFIG: 'newer0config' });
    for (const via of ['exec', '']) {
      const r = await w.sbx(['ls'], { env: { SBX_AGENT_VIA: via } });
      assert.equal(r.code, 1, `via ${via || 'the socket'}: ${r.stdout}`);
      assert.match(oneLineError(r), new RegExp(`${w.names.container}\\) is version 99\\.0\\.0, newer than this sbx ${VERSION.replace(/\./g, '\\.')}: upgrade sbx`));
    }
    const agent = await inspect(w.names.container);
    assert.equal(agent.Id, newer);
    assert.ok(agent.State.Running);
  });
});

describe('fail closed', () => {
  it('an agent that cannot start (SBX_DNS_UPSTREAM=not-an-ip): create --block-network exits 1 in time, one line, and makes nothing', async () => {
    const timeout = 8000;
    const w = agentWorld({ SBX_DNS_UPSTREAM: 'not-an-ip', SBX_AGENT_START_TIMEOUT_MS: String(timeout) });
    const started = performance.now();
    const r = await w.sbx(['create', '--block-network', '--name', 'never']);
    const ms = performance.now() - started;
    assert.equal(r.code, 1, r.stdout);
    const line = oneLineError(r);
    assert.match(line, new RegExp(`^error: the sbx agent ${w.names.container} did not answer within 8s: .*invalid SBX_DNS_UPSTREAM "not-an-ip"`));
    assert.ok(line.length < 600, `a short line: ${line}`);
    // The wait is bounded by the timeout (plus the image check and the container's start before it).
    assert.ok(ms < timeout + 4000, `took ${Math.round(ms)} ms`);
    assert.deepEqual(await w.leftovers(), { containers: [], networks: [], tables: [] });
    assert.equal((await docker('ps', '-aq', '--filter', 'label=sbx.name=never')).stdout.trim(), '');
  });

  it('an agent image that cannot be built (its bundles are missing): exit 1 at once, one line, nothing made', async () => {
    const dist = mkdtempSync(join(scratch, 'dist-'));
    copyFileSync(join(ROOT, 'dist', 'cli.cjs'), join(dist, 'cli.cjs'));
    const w = agentWorld({ SBX_CLI_ENTRY: join(dist, 'cli.cjs') });
    const r = await w.sbx(['create', '--block-network', '--name', 'never']);
    assert.equal(r.code, 1, r.stdout);
    assert.match(oneLineError(r), /^error: cannot read .*relay\.cjs for the agent image: run the build \(npm run build\)$/);
    assert.equal(await inspect(w.names.container), undefined);
    assert.notEqual((await docker('volume', 'inspect', w.names.volume)).code, 0);
  });

  describe('the agent dies under a blocked sandbox', () => {
    let w: AgentWorld;
    let box: any;
    before(async () => {
      w = agentWorld();
      box = await create(w, 'cut', ['--block-network', '--allow-out', 'allowed.test']);
    });

    it('control: while the agent runs, the allowed name resolves and answers', async () => {
      assert.equal(await dprobe(box.container, 'resolve', 'allowed.test'), 'ok 198.18.0.1');
      assert.equal((await dcurl(box.container, 'http://allowed.test/')).stdout.trim(), '198.18.0.1 80 allowed.test');
      assert.notEqual((await dcurl(box.container, 'http://other.test/')).code, 0);
    });

    it('killed and kept down: nothing gets out (the rules are in the kernel) and DNS fails closed', async () => {
      await docker('update', '--restart', 'no', w.names.container);
      assert.equal((await docker('kill', w.names.container)).code, 0);
      await eventually(async () => (await inspect(w.names.container))?.State.Running === false, 'the agent to be down');
      await fi.clearQueries();
      await fi.clearRequests();
      assert.match(await dprobe(box.container, 'resolve', 'allowed.test'), /^fail/);
      assert.match(await dprobe(box.container, 'dns', '198.18.0.53', 'allowed.test'), /^fail/);
      assert.notEqual((await dcurl(box.container, 'http://allowed.test/')).code, 0);
      assert.notEqual((await dcurl(box.container, '--resolve', 'allowed.test:80:198.18.0.1', 'http://allowed.test/')).code, 0, 'the proxy is gone: refused, not opened');
      assert.notEqual((await dcurl(box.container, '--resolve', 'allowed.test:443:198.18.0.1', '-k', 'https://allowed.test/')).code, 0);
      assert.equal(verdict(await dprobe(box.container, 'connect', '198.18.0.3', '8080'), 'connect 198.18.0.3:8080'), 'fail');
      assert.match(await dprobe(box.container, 'udp', '198.18.0.3', '9999'), /^fail/);
      assert.deepEqual(await fi.queries(), []);
      assert.deepEqual(await fi.requests(), []);
    });

    it('the next sbx command starts the agent again, and the policy is served as before', async () => {
      assert.equal((await w.sbx(['ls'])).code, 0);
      assert.equal((await inspect(w.names.container)).State.Running, true);
      assert.equal(await get(w, 'cut', 'http://allowed.test/'), '198.18.0.1 80 allowed.test');
      assert.equal(await get(w, 'cut', 'http://other.test/'), undefined);
      assert.equal(await tcp(w, 'cut', '198.18.0.3', 8080), 'fail');
    });
  });
});
