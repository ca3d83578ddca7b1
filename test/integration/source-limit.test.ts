// The per-source limit (SBX_GATEWAY_SOURCE_LIMIT) on a gateway that listens beyond loopback: one
// client address cannot hold every connection the gateway can take. Attacked from a client in a
// network namespace of the test's own (the fake internet's, 198.19.255.2) against the gateway on
// the host's address on that link, on each engine: connections are counted in the kernel (the
// listener guard resets the SYN past the limit) whatever serves the port (nginx 1.26 alone, HAProxy
// before Debian's nginx, the Node engine), and nginx counts requests in flight (HTTP/2 streams). Controls: the
// held connections stay held, another address of the namespace (198.18.0.1) is served meanwhile,
// the address is served again once it lets go, and local clients are not counted.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { guardScript } from '../../src/net/listener-guard.ts';
import { eventually, oneErrorLine, ROOT, run, World } from '../helpers.ts';
import { FAKE_HOST_LINK_IP, startFakeInternet, type FakeInternet } from '../fake-internet.ts';

const LIMIT = 4;
const OTHER_SOURCE = '198.18.0.1';
const HOST = 'web';
const world = new World({ SBX_GATEWAY_HOST: FAKE_HOST_LINK_IP, SBX_GATEWAY_SOURCE_LIMIT: String(LIMIT) });
let fi: FakeInternet;
const name = () => `8000-${HOST}.sbx.localhost`;

before(async () => {
  fi = await startFakeInternet();
  await world.json(['create', '--name', HOST, '-p', '8000', '--', 'python3', '-c', 'import time; time.sleep(1e9)']);
  await world.put(HOST, 'echo_server.py', '/tmp/echo_server.py');
  assert.equal((await world.sbx(['exec', '-d', HOST, '--', 'python3', '/tmp/echo_server.py', '8000'])).code, 0);
  await eventually(async () => (await fromOther()) === 200, 'the echo server');
});
after(async () => {
  await world.cleanup();
  await fi?.stop();
});

/** The status a request from the namespace gets (`from`: another of its addresses, another client). */
async function statusFromNs(from?: string): Promise<number> {
  const r = await run('ip', ['netns', 'exec', fi.ns, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', ...(from ? ['--interface', from] : []), '--connect-to', `::${FAKE_HOST_LINK_IP}:${world.gatewayPort()}`, `http://${name()}/`]);
  return Number(r.stdout);
}
const fromOther = () => statusFromNs(OTHER_SOURCE);

/** The namespace's own address is served again (the held connections closed). */
async function servedAgain(): Promise<void> {
  await eventually(async () => (await statusFromNs()) === 200, 'the namespace served again', 10_000);
}

/**
 * Holds `n` requests for /slow from the namespace (or from the host with `where: 'host'`), then
 * tries one more: what each held one and the extra one got; `release()` closes them.
 */
async function hold(n: number, where: 'ns' | 'host' = 'ns', target = FAKE_HOST_LINK_IP): Promise<{ held: string[]; extra: string; release: () => Promise<void> }> {
  const script = join(ROOT, 'test', 'fixtures', 'hold_connections.py');
  const args = [script, target, String(world.gatewayPort()), String(n), name()];
  const child = where === 'ns' ? spawn('ip', ['netns', 'exec', fi.ns, 'python3', ...args]) : spawn('python3', args);
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    child.on('exit', (code) => reject(new Error(`hold_connections.py exited ${code}: ${err}`)));
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const release = async () => {
    child.stdin.end('\n');
    await exited;
  };
  return { ...JSON.parse(line), release };
}

/** Restarts this world's gateway with these settings. */
async function restart(env: Record<string, string>): Promise<void> {
  assert.equal((await world.sbx(['gateway', 'stop'])).code, 0);
  const r = await world.sbx(['gateway', 'start'], { env });
  assert.equal(r.code, 0, r.stderr);
}

describe('one client address cannot hold every connection of a gateway that listens beyond loopback', () => {
  /** The attack on the engine now serving the port: LIMIT held, the next connection reset at its SYN; the controls. */
  async function connectionsLimited(): Promise<void> {
    const h = await hold(LIMIT);
    try {
      assert.deepEqual(h.held, Array(LIMIT).fill('held'));
      assert.equal(h.extra, 'refused', `the extra connection got ${h.extra}`);
      assert.equal(await fromOther(), 200, 'control: another address is served meanwhile');
    } finally {
      await h.release();
    }
    await servedAgain();
  }

  it(`nginx 1.26 (the default, h2c on its own port): the ${LIMIT + 1}th connection from one address is reset at its SYN; the ${LIMIT} held stay held, another address is served meanwhile, and the first is served again once it lets go`, async () => {
    assert.equal((await world.json(['gateway', 'status'])).h2c, true, 'h2c on the port');
    assert.match(await world.gatewayLog(), /h2c: nginx \(/, 'nginx itself takes h2c (no HAProxy)');
    await connectionsLimited();
  });

  it('the counts survive a rewrite of the guard while the gateway serves (rules put back after another program deleted sbx\'s table): with LIMIT held, one more is still refused; another address is served (control)', async () => {
    const h = await hold(LIMIT);
    try {
      assert.deepEqual([h.held, h.extra], [Array(LIMIT).fill('held'), 'refused']);
      const before = (await world.gatewayLog()).split('\n').filter((l) => l.includes('the rules are back')).length;
      assert.equal((await run('nft', ['delete', 'table', 'inet', 'sbx'])).code, 0);
      await eventually(async () => (await world.gatewayLog()).split('\n').filter((l) => l.includes('the rules are back')).length > before, 'the rules put back (the guard rewritten)', 10_000);
      const log = await world.gatewayLog();
      assert.doesNotMatch(log, /the rules are back but for|the guard is made anew/, 'rewritten in place, not failed nor made anew');
      const again = await hold(0);
      await again.release();
      assert.equal(again.extra, 'refused', `one more after the rewrite got ${again.extra}`);
      assert.equal(await fromOther(), 200, 'control: another address is served');
    } finally {
      await h.release();
    }
    await servedAgain();
  });

  /** LIMIT + 1 HTTP/2 streams at once from the namespace on one connection: one gets 429 at once; another address is served meanwhile. */
  async function streamsLimited(): Promise<void> {
    // Node's HTTP/2 client (curl 7.88's --parallel with prior knowledge sent only one stream).
    const script = join(ROOT, 'test', 'fixtures', 'h2_streams.mjs');
    const streams = run('ip', ['netns', 'exec', fi.ns, process.execPath, script, FAKE_HOST_LINK_IP, String(world.gatewayPort()), name(), String(LIMIT + 1), '/slow', '2500']);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(await fromOther(), 200, 'control: another address is served');
    const done = await streams;
    const { statuses } = JSON.parse(done.stdout) as { statuses: Array<number | null> };
    assert.deepEqual([...statuses].sort(), [429, null, null, null, null], `four held, the fifth refused (${done.stdout}${done.stderr})`);
  }

  it(`nginx: HTTP/2 streams from one address count as requests in flight: the ${LIMIT + 1}th at once on one connection gets 429 at once; another address is served meanwhile`, streamsLimited);

  it(`HAProxy before Debian's nginx (SBX_NGINX=/usr/sbin/nginx): the same, connections in the kernel and streams in nginx by the address from HAProxy's PROXY line`, async () => {
    await restart({ SBX_NGINX: '/usr/sbin/nginx' });
    assert.equal((await world.json(['gateway', 'status'])).h2c, true);
    assert.match(await world.gatewayLog(), /h2c: HAProxy \(/);
    await connectionsLimited();
    await streamsLimited();
  });

  it(`the Node engine: the same`, async () => {
    await restart({ SBX_GATEWAY_ENGINE: 'node' });
    assert.equal((await world.json(['gateway', 'status'], { env: { SBX_GATEWAY_ENGINE: 'node' } })).engine, 'node');
    await connectionsLimited();
  });

  it('0: no limit (control for the attacks: the same client holds more and is served)', async () => {
    await restart({ SBX_GATEWAY_SOURCE_LIMIT: '0' });
    const h = await hold(LIMIT * 2);
    try {
      assert.deepEqual(h.held, Array(LIMIT * 2).fill('held'));
      assert.match(h.extra, /^HTTP\/1\.1 200 /);
    } finally {
      await h.release();
    }
  });

  for (const [label, env] of [['nginx', {}], ['the Node engine', { SBX_GATEWAY_ENGINE: 'node' }]] as const) {
    it(`control, ${label}: local clients are not counted (${LIMIT * 2} held and one more served, on 127.0.0.1)`, async () => {
      await restart({ ...env, SBX_GATEWAY_HOST: '127.0.0.1' });
      const h = await hold(LIMIT * 2, 'host', '127.0.0.1');
      try {
        assert.deepEqual(h.held, Array(LIMIT * 2).fill('held'));
        assert.match(h.extra, /^HTTP\/1\.1 200 /);
      } finally {
        await h.release();
      }
    });
  }

  it('the kernel\'s table of clients full (a flood of spoofed SYNs): a client not in it is refused, not let through uncounted; the ones in it keep their counts', async () => {
    // The guard's own rules, with a table of 2 clients and a limit of 1, before a listener of this
    // test on the link address; clients from three addresses of the namespace.
    const table = 'sbxgw_fulltest';
    const server = createServer((socket) => socket.on('error', () => {}));
    await new Promise<void>((r) => server.listen(0, FAKE_HOST_LINK_IP, r));
    const port = (server.address() as { port: number }).port;
    const apply = await run('nft', ['-f', '-'], { input: guardScript(table, { dns: 1, http: 2, tls: 3 }, { host: FAKE_HOST_LINK_IP, port, limit: 1, size: 2 }) });
    assert.equal(apply.code, 0, apply.stderr);
    try {
      // Each line: connect from SRC, print ok or refused, and hold every connection until the end.
      const py = `import socket, sys, time
held = []
for src in sys.argv[1:]:
    s = socket.socket(); s.bind((src, 0)); s.settimeout(3)
    try:
        s.connect(("${FAKE_HOST_LINK_IP}", ${port})); held.append(s); print("ok", flush=True)
    except OSError as e:
        print("refused" if isinstance(e, ConnectionRefusedError) else f"error {e}", flush=True)
`;
      const r = await run('ip', ['netns', 'exec', fi.ns, 'python3', '-c', py, '198.18.0.1', '198.18.0.1', '198.18.0.2', '198.18.0.3']);
      assert.deepEqual(r.stdout.trim().split('\n'), ['ok', 'refused', 'ok', 'refused'], r.stderr);
    } finally {
      await run('nft', ['delete', 'table', 'inet', table]);
      server.close();
    }
  });

  it('a bad SBX_GATEWAY_SOURCE_LIMIT is a usage error (exit 2) naming what is accepted, and no gateway starts', async () => {
    assert.equal((await world.sbx(['gateway', 'stop'])).code, 0);
    const r = await world.sbx(['gateway', 'start'], { env: { SBX_GATEWAY_SOURCE_LIMIT: 'lots' } });
    assert.equal(r.code, 2, r.stderr);
    assert.match(oneErrorLine(r), /^error: invalid SBX_GATEWAY_SOURCE_LIMIT "lots": use 0 \(no limit\) to 100000/);
    assert.equal((await world.json(['gateway', 'status'])).running, false);
  });
});
