// The gateway never says it serves when it cannot: a port held by another home's gateway or by a
// stale nginx is an error that names the holder; nginx does not outlive its gateway.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { curl, eventually, run, sleep, World } from '../helpers.ts';
import { findNginx } from '../../src/gateway/nginx.ts';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** nginx processes (master and workers) whose command line names this home's run directory. */
async function nginxOf(home: string): Promise<number[]> {
  const ps = await run('ps', ['-eo', 'pid=,args=']);
  return ps.stdout
    .split('\n')
    .filter((l) => l.includes('nginx') && l.includes(`${home}/run/`))
    .map((l) => Number(l.trim().split(/\s+/)[0]));
}

const worlds: World[] = [];
const stale: number[] = [];
after(async () => {
  for (const pid of stale) {
    try {
      process.kill(-pid, 'SIGKILL'); // detached: its own process group, workers included
    } catch {}
  }
  for (const w of worlds) {
    await w.cleanup();
    // Whatever nginx is left (a failed test): the master and its workers (its process group).
    for (const pid of await nginxOf(w.home)) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {}
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
  }
});

/** A gateway with HAProxy's h2c front: Debian's nginx 1.22 (the one setup builds takes h2c itself). */
const WITH_FRONT = { SBX_NGINX: '/usr/sbin/nginx' };

async function twoWorlds(env: Record<string, string> = {}): Promise<[World, World, number]> {
  const port = await freePort();
  const a = new World({ ...env, SBX_GATEWAY_PORT: String(port) });
  const b = new World({ ...env, SBX_GATEWAY_PORT: String(port) });
  worlds.push(a, b);
  return [a, b, port];
}

describe('a gateway that cannot serve its port', () => {
  test('another home on the same port: start, create -p fail with one line naming the port and its holder', async () => {
    const [a, b, port] = await twoWorlds();
    assert.equal((await a.sbx(['gateway', 'start'])).code, 0);
    const gwA = JSON.parse(readFileSync(join(a.home, 'gateway.json'), 'utf8')).pid;
    for (const args of [['gateway', 'start'], ['create', '-p', '8000', '--name', 'web']]) {
      const r = await b.sbx(args);
      assert.equal(r.code, 1, `sbx ${args.join(' ')}: ${r.stdout} ${r.stderr}`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(lines[0]!, /^error: /);
      assert.match(lines[0]!, new RegExp(`port ${port}\\b.*in use`));
      assert.ok(lines[0]!.includes(a.home) && lines[0]!.includes(`pid ${gwA}`), lines[0]);
    }
    assert.equal(existsSync(join(b.home, 'gateway.json')), false, 'no gateway announced');
    assert.deepEqual(await nginxOf(b.home), [], "no nginx of b's home left");
    assert.deepEqual((await b.json(['ls'])), []);
  });
});

describe('nginx does not outlive its gateway', () => {
  for (const [label, env] of [['nginx 1.26 alone', {}], ['Debian\'s nginx behind its h2c front', WITH_FRONT]] as const) {
    test(`kill -9 of the gateway (${label}): its nginx and its h2c front go too, and the next start works at once`, async () => {
      const [a] = await twoWorlds(env);
      assert.equal((await a.sbx(['gateway', 'start'])).code, 0);
      const gw = JSON.parse(readFileSync(join(a.home, 'gateway.json'), 'utf8')).pid;
      const nginx = Number(readFileSync(join(a.home, 'run', 'nginx.pid'), 'utf8'));
      const haproxyPid = join(a.home, 'run', 'haproxy.pid');
      assert.equal(existsSync(haproxyPid), env === WITH_FRONT, 'a front only before Debian\'s nginx');
      const haproxy = existsSync(haproxyPid) ? Number(readFileSync(haproxyPid, 'utf8')) : 0;
      process.kill(gw, 'SIGKILL');
      await eventually(async () => !alive(nginx), 'nginx to end with its gateway', 5000);
      if (haproxy) await eventually(async () => !alive(haproxy), 'haproxy to end with its gateway', 5000);
      const r = await a.sbx(['gateway', 'start']);
      assert.equal(r.code, 0, r.stderr);
      const masters = await nginxOf(a.home);
      assert.equal(masters.length, 1, 'one nginx master');
      assert.notEqual(masters[0], nginx);
    });
  }

  test('a gateway whose nginx dies stops (it cannot serve its port any more), and starts again', async () => {
    const [a] = await twoWorlds();
    assert.equal((await a.sbx(['gateway', 'start'])).code, 0);
    const gw = JSON.parse(readFileSync(join(a.home, 'gateway.json'), 'utf8')).pid;
    process.kill(Number(readFileSync(join(a.home, 'run', 'nginx.pid'), 'utf8')), 'SIGKILL');
    // It stops after closing its parts (about 3 s here, more on a loaded machine).
    await eventually(async () => !alive(gw), 'the gateway to stop', 15_000);
    assert.equal(existsSync(join(a.home, 'gateway.json')), false);
    assert.match(readFileSync(join(a.home, 'gateway.log'), 'utf8'), /nginx exited .*: the gateway stops/);
    assert.equal((await a.sbx(['gateway', 'start'])).code, 0);
  });

  test("a stale nginx of a home: that home's next gateway ends it; another home's names it", async () => {
    // nginx on the port itself: without the h2c front (with it, nginx listens on unix sockets).
    const [a, b, port] = await twoWorlds({ SBX_GATEWAY_H2C: '0' });
    assert.equal((await a.sbx(['gateway', 'start'])).code, 0);
    const conf = readFileSync(join(a.home, 'run', 'nginx.conf'), 'utf8');
    assert.equal((await a.sbx(['gateway', 'stop'])).code, 0);
    // A stale nginx as one left by a gateway killed outright (without the parent-death signal).
    writeFileSync(join(a.home, 'run', 'stale.conf'), conf);
    for (const m of conf.matchAll(/_temp_path (\S+);/g)) mkdirSync(m[1]!, { recursive: true });
    const child = spawn(findNginx()!, ['-p', `${join(a.home, 'run')}/`, '-e', join(a.home, 'run', 'nginx-error.log'), '-c', join(a.home, 'run', 'stale.conf')], { detached: true, stdio: 'ignore' });
    child.unref();
    stale.push(child.pid!);
    await eventually(async () => existsSync(join(a.home, 'run', 'nginx.pid')) && (await run('ss', ['-ltnH', `sport = :${port}`])).stdout.includes(String(port)), 'the stale nginx to listen', 5000);
    await staleIsNamedThenEnded(a, b, port, 'nginx', child.pid!);
  });

  test("a stale h2c front (HAProxy) of a home: that home's next gateway ends it; another home's names it", async () => {
    const [a, b, port] = await twoWorlds(WITH_FRONT);
    assert.equal((await a.sbx(['gateway', 'start'])).code, 0);
    assert.equal((await a.json(['gateway', 'status'])).h2c, true);
    const cfg = join(a.home, 'run', 'haproxy.cfg');
    assert.equal((await a.sbx(['gateway', 'stop'])).code, 0);
    // As one left by a gateway killed outright (without the parent-death signal): its pid file too.
    const child = spawn('/usr/sbin/haproxy', ['-W', '-f', cfg, '-db'], { detached: true, stdio: 'ignore' });
    child.unref();
    stale.push(child.pid!);
    writeFileSync(join(a.home, 'run', 'haproxy.pid'), `${child.pid}\n`);
    await eventually(async () => (await run('ss', ['-ltnH', `sport = :${port}`])).stdout.includes(String(port)), 'the stale haproxy to listen', 5000);
    await staleIsNamedThenEnded(a, b, port, 'haproxy', child.pid!);
  });
});

/** b's start fails naming a's stale helper (one line: which, its pid, a's home, how to end it); a's own start ends it. */
async function staleIsNamedThenEnded(a: World, b: World, port: number, helper: string, pid: number): Promise<void> {
  const r = await b.sbx(['gateway', 'start']);
  assert.equal(r.code, 1, r.stderr);
  const line = r.stderr.trim();
  assert.equal(line.split('\n').length, 1, line);
  assert.match(line, new RegExp(`^error: .*port ${port}\\b.*in use.*stale ${helper} \\(pid ${pid}\\).*${a.home.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*kill ${pid}`));
  const again = await a.sbx(['gateway', 'start']);
  assert.equal(again.code, 0, again.stderr);
  await sleep(100);
  assert.equal(alive(pid), false, `the stale ${helper} was ended`);
}

describe('a change the gateway cannot apply', () => {
  test('a public port made private while nginx cannot take it: exit 1, the gateway stops and the old public route is not served; control: a gateway started again serves it private', async () => {
    const [w] = await twoWorlds();
    await w.json(['create', '--name', 'pub', '-p', '8000', '--', 'python3', '-m', 'http.server', '8000']);
    const url = (await w.json<any[]>(['port', 'ls', 'pub']))[0].url as string;
    await eventually(async () => (await curl([url])).status === 200, 'the public URL (control)');
    // nginx itself carries it by now (until its reload, the Node gateway would, and a route nginx
    // never took needs no reload to go).
    await eventually(() => w.nginxCarries('8000-pub.sbx.localhost'), 'nginx to carry the public route');
    const gw = JSON.parse(readFileSync(join(w.home, 'gateway.json'), 'utf8')).pid;
    const nginx = Number(readFileSync(join(w.home, 'run', 'nginx.pid'), 'utf8'));
    // A stopped nginx takes no new configuration: the reload that retires the public route fails.
    process.kill(nginx, 'SIGSTOP');
    let r;
    try {
      r = await w.sbx(['port', 'expose', 'pub', '8000', '--private']);
    } finally {
      try {
        process.kill(nginx, 'SIGCONT');
      } catch {}
    }
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: the gateway could not apply the change \(nginx did not take configuration \d+ within 10s[^\n]*\), so it stopped rather than serve the old routes and policies; it starts again, from what the store holds, with sbx gateway start or the next command that needs it\n$/);
    await eventually(async () => !alive(gw), 'the gateway to stop', 10_000);
    assert.equal((await curl(['--max-time', '3', url])).status, 0, 'nothing serves the old public route');
    // A gateway started again serves the saved change: private, so no token, no page.
    const [port] = await w.json<any[]>(['port', 'ls', 'pub']);
    assert.equal(port.public, false);
    await w.json(['gateway', 'start']);
    assert.equal((await curl([url])).status, 403);
    const token = (await w.sbx(['token', 'pub'])).stdout.trim();
    assert.equal((await curl(['-H', `x-sbx-traffic-token: ${token}`, url])).status, 200);
  });
});

describe('a paused sandbox whose server keeps connections alive wakes on the next request', () => {
  const w = new World();
  worlds.push(w);
  for (const access of ['private', 'public'] as const) {
    test(`${access} port (${access === 'private' ? 'the Node gateway' : "nginx's fast path"}): request, pause, request -> 200 at once`, async () => {
      const name = `ka-${access}`;
      const port = access === 'private' ? 8000 : 8001;
      const box = await w.json(['create', '--name', name, '-p', String(port), ...(access === 'private' ? ['--private'] : [])]);
      await w.put(name, 'keepalive_server.py', '/srv/ka.py');
      await w.sbx(['exec', '-d', name, '--', 'python3', '/srv/ka.py', String(port)]);
      const headers = access === 'private' ? ['-H', `x-sbx-traffic-token: ${box.token}`] : [];
      const url = box.ports[0].url;
      // Listening, as seen from inside, before the gateway's first request (the one below), which
      // must be a 200. (One that finds the bridge address refused and then the server listening
      // through the in-sandbox relay goes to the bridge address after all: unit/targets.test.ts.)
      const probe = `import socket; socket.create_connection(("127.0.0.1", ${port}), 1)`;
      await eventually(async () => (await w.sbx(['exec', name, '--', 'python3', '-c', probe])).code === 0, 'the server');
      // The public port: nginx itself carries it, with its own kept connection.
      if (access === 'public') await eventually(() => w.nginxCarries(`${port}-${name}.sbx.localhost`), 'nginx to carry the route');
      assert.equal((await curl([...headers, url])).status, 200); // the gateway keeps that connection
      await w.json(['pause', name]);
      const t0 = Date.now();
      const r = await curl(['--max-time', '10', ...headers, url]);
      assert.equal(r.status, 200, `${r.status} ${r.body}`);
      assert.ok(Date.now() - t0 < 3000, `answered in ${Date.now() - t0} ms`);
      assert.equal((await w.json(['inspect', name])).status, 'running');
    });
  }
});
