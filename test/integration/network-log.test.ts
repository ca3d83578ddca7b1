// `sbx network log` and `sbx network check`, proven by packets: real sandboxes talk to the fake
// internet (test/fake-internet.ts), and every decision they meet (the kernel's rules, sbx's DNS
// forwarder, its Host/SNI proxy) must show in the log with the rule that made it; `check` must say
// what the packets then do. Runs three ways (SBX_TEST_AS, test/test-mode.ts): the agent reads the
// kernel's entries as the host-mode gateway does.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { createInterface } from 'node:readline';
import { Sbx } from '../../src/index.ts';
import { sleep, type World } from '../helpers.ts';
import { closeMode, modeWorld, onlyAs, TEST_AS } from '../test-mode.ts';
import { startFakeInternet, FAKE_HOST_LINK_IP, FAKE_VHOST_IP, type FakeInternet } from '../fake-internet.ts';
import type { NetworkLogEntry } from '../../src/core/network-log.ts';

let fi: FakeInternet;
let world: World;

before(async () => {
  fi = await startFakeInternet();
  world = await modeWorld({ SBX_DNS_UPSTREAM: fi.dnsUpstream });
});
after(async () => {
  await world?.cleanup();
  await closeMode();
  await fi?.stop();
});

async function create(name: string, flags: string[] = []): Promise<void> {
  await world.json(['create', '--name', name, ...flags]);
  await world.put(name, 'probe.py', '/probe.py');
}

async function sh(box: string, script: string): Promise<string> {
  return (await world.sbx(['exec', box, '--', 'sh', '-c', script])).stdout.trim();
}
const probe = (box: string, ...args: string[]) => sh(box, `python3 /probe.py ${args.join(' ')}`);

async function log(box: string, ...flags: string[]): Promise<NetworkLogEntry[]> {
  const r = await world.sbx(['network', 'log', box, '--json', ...flags]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

/** Waits for an entry like `want` in the sandbox's log (the worker sends its entries every 100 ms). */
async function logged(box: string, want: Partial<NetworkLogEntry>, after = 0): Promise<NetworkLogEntry> {
  const like = (e: NetworkLogEntry) => Date.parse(e.time) >= after && Object.entries(want).every(([k, v]) => JSON.stringify((e as any)[k]) === JSON.stringify(v));
  for (let i = 0; ; i++) {
    const entries = await log(box);
    const hit = entries.find(like);
    if (hit) return hit;
    if (i === 20) assert.fail(`no entry like ${JSON.stringify(want)} in ${box}'s log:\n${entries.map((e) => JSON.stringify(e)).join('\n')}`);
    await sleep(100);
  }
}

async function check(box: string, dest: string, udp = false): Promise<{ code: number; json: any }> {
  const r = await world.sbx(['network', 'check', box, dest, '--json', ...(udp ? ['--udp'] : [])]);
  assert.ok(r.code === 0 || r.code === 1, `check ${dest}: exit ${r.code}: ${r.stderr}`);
  const json = JSON.parse(r.stdout);
  assert.equal(r.code, json.verdict === 'allowed' ? 0 : 1, 'exit 0 allowed, 1 refused');
  return { code: r.code, json };
}

/** What packets do: an answer from the destination or not (HTTP(S) on 80/443, a connect or a UDP echo elsewhere). */
async function reaches(box: string, host: string, port: number, udp = false): Promise<boolean> {
  if (udp) return (await probe(box, 'udp', host, String(port))).startsWith('ok ');
  if (port === 80 || port === 443) {
    const url = port === 80 ? `http://${host.includes(':') ? `[${host}]` : host}/` : `https://${host}/`;
    return (await world.sbx(['exec', box, '--', 'curl', '-s', '-f', '-k', '-m', '5', '-o', '/dev/null', url])).code === 0;
  }
  return (await probe(box, 'connect', host, String(port))).startsWith('ok ');
}

describe('every kind of decision is in the log, with its rule', () => {
  before(async () => {
    await create('logged', ['--block-network', '--allow-out', 'vhost-a.test', '--allow-out', '198.18.0.3', '--allow-out', 'allowed.test:8080']);
    await create('open');
  });

  it('the kernel: allowed and refused connections, by address', async () => {
    assert.match(await probe('logged', 'connect', '198.18.0.3', '8080'), /^ok /);
    assert.match(await probe('logged', 'connect', '198.18.0.1', '8080'), /^fail /);
    assert.match(await probe('logged', 'udp', '198.18.0.2', '9999'), /^fail/);
    await logged('logged', { source: 'kernel', protocol: 'tcp', address: '198.18.0.3', port: 8080, verdict: 'allowed', rule: 'allowOut 198.18.0.3' });
    await logged('logged', { source: 'kernel', protocol: 'tcp', address: '198.18.0.1', port: 8080, verdict: 'blocked', rule: 'mode block-all' });
    await logged('logged', { source: 'kernel', protocol: 'udp', address: '198.18.0.2', port: 9999, verdict: 'blocked', rule: 'mode block-all' });
  });

  it('a name:port entry: the kernel names the address by the DNS answer that opened it', async () => {
    assert.match(await probe('logged', 'connect', 'allowed.test', '8080'), /^ok /);
    await logged('logged', { source: 'kernel', address: '198.18.0.1', port: 8080, name: 'allowed.test', verdict: 'allowed', rule: 'allowOut allowed.test:8080' });
  });

  it('DNS: an allowed name with its answers, and an NXDOMAIN', async () => {
    assert.equal(await probe('logged', 'resolve', 'vhost-a.test'), `ok ${FAKE_VHOST_IP}`);
    assert.match(await probe('logged', 'resolve', 'other.test'), /^fail/);
    await logged('logged', { source: 'dns', protocol: 'dns', name: 'vhost-a.test', type: 'A', verdict: 'allowed', rule: 'allowOut vhost-a.test', answers: [FAKE_VHOST_IP] });
    await logged('logged', { source: 'dns', protocol: 'dns', name: 'other.test', type: 'A', verdict: 'blocked', rule: 'mode block-all' });
  });

  it('the proxy: a Host and an SNI let through, and refused', async () => {
    assert.equal(await reaches('logged', 'vhost-a.test', 80), true);
    assert.equal(await reaches('logged', 'vhost-a.test', 443), true);
    // vhost-b.test shares vhost-a.test's address: sent there by hand, the proxy refuses it by name.
    const resolveB = (port: number) => `--resolve vhost-b.test:${port}:${FAKE_VHOST_IP}`;
    assert.notEqual((await world.sbx(['exec', 'logged', '--', 'sh', '-c', `curl -s -f -m 5 ${resolveB(80)} http://vhost-b.test/`])).code, 0);
    assert.notEqual((await world.sbx(['exec', 'logged', '--', 'sh', '-c', `curl -s -f -k -m 5 ${resolveB(443)} https://vhost-b.test/`])).code, 0);
    await logged('logged', { source: 'proxy', name: 'vhost-a.test', port: 80, verdict: 'allowed', rule: 'allowOut vhost-a.test' });
    await logged('logged', { source: 'proxy', name: 'vhost-a.test', port: 443, verdict: 'allowed', rule: 'allowOut vhost-a.test' });
    await logged('logged', { source: 'proxy', name: 'vhost-b.test', port: 80, verdict: 'blocked', rule: 'mode block-all' });
    await logged('logged', { source: 'proxy', name: 'vhost-b.test', port: 443, verdict: 'blocked', rule: 'mode block-all' });
  });

  it('gateway status says the log has the kernel\'s entries', async () => {
    assert.match((await world.json(['gateway', 'status'])).networkLog, /^kernel, dns, proxy \(nflog group \d+\)$/);
  });

  it('a host address, refused by default (allow-all)', async (t) => {
    if (onlyAs(t, ['root', 'user'], "the fake internet's link is this namespace's, not the remote engine's host")) return;
    assert.match(await probe('open', 'connect', FAKE_HOST_LINK_IP, '22'), /^fail /);
    await logged('open', { source: 'kernel', address: FAKE_HOST_LINK_IP, port: 22, verdict: 'blocked', rule: 'default: host address' });
  });

  it('--blocked and --since filter; a table on a terminal is the plain rows in a pipe', async () => {
    const blocked = await log('logged', '--blocked');
    assert.ok(blocked.length > 0 && blocked.every((e) => e.verdict === 'blocked'));
    await sleep(1100);
    assert.deepEqual(await log('logged', '--since', '1s'), []);
    assert.ok((await log('logged', '--since', '10m')).length >= blocked.length);
    const plain = await world.sbx(['network', 'log', 'logged']);
    assert.equal(plain.code, 0);
    assert.match(plain.stdout, /\tkernel\ttcp\t198\.18\.0\.1:8080\t-\tblocked\tmode block-all\n/);
    assert.ok(blocked.every((e) => e.sandbox === 'logged'), 'each entry names its sandbox');
  });
});

describe('--follow', () => {
  before(() => create('followed', ['--block-network']));

  it('shows an event within 1 s of the attempt, until Ctrl-C (exit 0)', async () => {
    const child = world.spawn(['network', 'log', 'followed', '--follow', '--json']);
    const lines = createInterface({ input: child.stdout! });
    const seen: Array<{ at: number; entry: NetworkLogEntry }> = [];
    lines.on('line', (l) => seen.push({ at: Date.now(), entry: JSON.parse(l) }));
    try {
      await sleep(500); // the follower is in place
      for (const port of [8081, 8082, 8083]) {
        assert.match(await probe('followed', 'connect', '198.18.0.3', String(port)), /^fail /);
        for (let i = 0; i < 30 && !seen.some((s) => s.entry.port === port); i++) await sleep(50);
        const hit = seen.find((s) => s.entry.port === port);
        assert.ok(hit, `port ${port}: not followed`);
        const late = hit.at - Date.parse(hit.entry.time);
        assert.ok(late < 1000, `port ${port}: shown ${late} ms after the attempt`);
      }
    } finally {
      child.kill('SIGINT');
    }
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(code, 0);
  });

  it('the library: Sbx.networkLog follows as an async iterator; checkNetwork decides', async (t) => {
    if (onlyAs(t, ['root'], 'the library in this (root) process, host mode')) return;
    Object.assign(process.env, world.env); // the gateway's settings, as the CLI calls had them
    const sbx = new Sbx({ home: world.home, mode: 'host' });
    const stop = new AbortController();
    const it = sbx.networkLog('followed', { follow: true, signal: stop.signal, since: '1s' });
    const found = (async () => {
      for await (const e of it) if (e.port === 8090) return e;
      return undefined;
    })();
    await sleep(300);
    assert.match(await probe('followed', 'connect', '198.18.0.3', '8090'), /^fail /);
    const value = (await found)!;
    assert.equal(value.port, 8090);
    assert.equal(value.rule, 'mode block-all');
    stop.abort();
    assert.equal((await sbx.checkNetwork('followed', '198.18.0.3:8090')).verdict, 'blocked');
    assert.equal((await sbx.networkLog('followed', { blocked: true })).some((e) => e.port === 8090), true);
  });
});

describe('network check agrees with packets, for every example of the README rule table', () => {
  let host: Server;
  let hostPort = 0;
  let gatewayIp = '';
  before(async () => {
    host = createServer((_req, res) => res.end('host service\n'));
    await new Promise<void>((r) => host.listen(0, '0.0.0.0', r));
    hostPort = (host.address() as { port: number }).port;
    await create('checked');
    gatewayIp = /nameserver (\S+)/.exec(await sh('checked', 'cat /etc/resolv.conf'))![1]!;
  });
  after(() => host.close());

  // The README's examples with fake internet addresses and names in place of the real ones.
  const table = (): Array<{ policy: string[]; cases: Array<[string, number, boolean] | [string, number, boolean, 'udp']> }> => [
    { policy: ['--deny-out', 'all', '--allow-out', '198.18.0.1', '--allow-out', '198.18.0.4/31'], cases: [['198.18.0.1', 8080, true], ['198.18.0.5', 8080, true], ['198.18.0.3', 8080, false]] },
    { policy: ['--deny-out', '198.18.0.2'], cases: [['198.18.0.2', 8080, false], ['198.18.0.2', 9999, false, 'udp'], ['198.18.0.3', 8080, true]] },
    { policy: ['--deny-out', '198.18.0.0/24', '--allow-out', '198.18.0.3'], cases: [['198.18.0.3', 8080, true], ['198.18.0.2', 8080, false]] },
    { policy: ['--mode', 'block-all', '--allow-port', '8080'], cases: [['198.18.0.3', 8080, true], ['198.18.0.3', 7000, false]] },
    { policy: ['--deny-port', '8080'], cases: [['198.18.0.3', 8080, false], ['198.18.0.3', 7000, true], ['198.18.0.3', 9999, true, 'udp']] },
    { policy: ['--mode', 'block-all', '--allow-out', 'allowed.test'], cases: [['allowed.test', 80, true], ['allowed.test', 443, true], ['allowed.test', 8080, false], ['other.test', 80, false], ['198.18.0.1', 80, false]] },
    { policy: ['--mode', 'block-all', '--allow-out', 'allowed.test', '--allow-out', 'allowed.test:8080'], cases: [['allowed.test', 80, true], ['allowed.test', 8080, true], ['allowed.test', 7000, false]] },
    { policy: ['--mode', 'block-all', '--allow-out', '*.wild.test:8080'], cases: [['a.wild.test', 8080, true], ['a.wild.test', 80, false], ['wild.test', 8080, false]] },
    { policy: ['--deny-out', 'denied.test'], cases: [['denied.test', 80, false], ['denied.test', 8080, false], ['198.18.0.2', 80, false], ['other.test', 80, true]] },
    // The host's own service and addresses: this namespace's, so not in the remote run.
    ...(TEST_AS === 'remote'
      ? [{ policy: [], cases: [['198.18.0.3', 8080, true], ['10.203.77.1', 8080, false], ['169.254.77.1', 80, false]] as Array<[string, number, boolean]> }, { policy: ['--allow-out', '10.203.77.0/24'], cases: [['10.203.77.1', 8080, true], ['198.18.0.3', 8080, true]] as Array<[string, number, boolean]> }]
      : [
          { policy: [], cases: [['198.18.0.3', 8080, true], [gatewayIp, hostPort, false], [FAKE_HOST_LINK_IP, 80, false], ['10.203.77.1', 8080, false], ['169.254.77.1', 80, false]] as Array<[string, number, boolean]> },
          { policy: ['--allow-out', `host:${hostPort}`], cases: [[gatewayIp, hostPort, true], [gatewayIp, 22, false]] as Array<[string, number, boolean]> },
          { policy: ['--allow-out', '10.203.77.0/24'], cases: [['10.203.77.1', 8080, true], ['198.18.0.3', 8080, true], [gatewayIp, hostPort, false]] as Array<[string, number, boolean]> },
        ]),
  ];

  it('each destination: the verdict of check is what the packets do, and the log says the same rule', async () => {
    for (const { policy, cases } of table()) {
      await world.json(['network', 'update', 'checked', ...policy]);
      for (const [dest, port, expected, udp] of cases) {
        const what = `${policy.join(' ') || '(default)'}: ${dest}:${port}${udp ? '/udp' : ''}`;
        const began = Date.now() - 50;
        const { json } = await check('checked', `${dest.includes(':') ? `[${dest}]` : dest}:${port}`, !!udp);
        const packets = await reaches('checked', dest, port, !!udp);
        assert.equal(packets, expected, `${what}: packets`);
        assert.equal(json.verdict, expected ? 'allowed' : 'blocked', `${what}: check says ${JSON.stringify(json)}`);
        // The log's entry for it (kernel, proxy or DNS) carries the rule check named.
        const where = json.path === 'dns' ? { source: 'dns', name: dest } : json.path === 'proxy' ? { source: 'proxy', port } : { source: 'kernel', port, address: json.address };
        const entry = await logged('checked', { ...where, verdict: json.verdict }, began);
        assert.equal(entry.rule, json.rule, `${what}: the log's rule`);
      }
    }
  });

  it('exit codes: 2 for bad input, 3 for no such sandbox', async () => {
    for (const bad of [['network', 'check', 'checked', 'x.test:99999'], ['network', 'check', 'checked'], ['network', 'log', 'checked', '--since', 'soon']]) {
      const r = await world.sbx(bad);
      assert.equal(r.code, 2, `${bad.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    for (const missing of [['network', 'check', 'nosuch', 'allowed.test'], ['network', 'log', 'nosuch']]) assert.equal((await world.sbx(missing)).code, 3, missing.join(' '));
  });
});

describe('a flood of refused connects', () => {
  before(async () => {
    await create('flood', ['--block-network']);
    await create('calm', ['--block-network', '--allow-out', '198.18.0.3']);
  });

  /** The median of 200 connect+close rounds from `calm` to an allowed host, in ms. */
  async function calmMedian(): Promise<number> {
    const script = `import socket,time,statistics
t=[]
for i in range(200):
  s=time.perf_counter();c=socket.create_connection(("198.18.0.3",8080),2);c.close();t.append((time.perf_counter()-s)*1000)
print(statistics.median(t))`;
    return Number(await sh('calm', `python3 -c '${script}'`));
  }

  it('100,000 refused connects leave the log bounded and the other sandbox as fast', async () => {
    const before = await calmMedian();
    const flood = `import socket
n=0
for i in range(100000):
  s=socket.socket()
  try: s.connect(("198.18.0.1",1+i%60000))
  except OSError: n+=1
  s.close()
print(n)`;
    const started = Date.now();
    const running = sh('flood', `python3 -c '${flood}'`);
    await sleep(300);
    const during = await calmMedian();
    assert.equal(await running, '100000', 'every connect was refused');
    const seconds = (Date.now() - started) / 1000;
    const entries = await log('flood');
    // The kernel logs at most 50 a second after a burst of 200 (per verdict), the ring holds 10,000.
    assert.ok(entries.length <= 200 + 50 * (seconds + 2), `${entries.length} entries in ${seconds.toFixed(1)} s`);
    assert.ok(entries.length >= 100, `${entries.length} entries`);
    assert.ok(entries.every((e) => e.verdict === 'blocked' && e.rule === 'mode block-all'));
    assert.deepEqual(await log('calm', '--blocked'), [], "the flood is not in the other sandbox's log");
    console.log(`flood: ${seconds.toFixed(1)} s, ${entries.length} entries; calm median ${before.toFixed(3)} ms before, ${during.toFixed(3)} ms during`);
    assert.ok(during < before * 2 + 1, `the other sandbox's connects: ${before.toFixed(3)} ms before, ${during.toFixed(3)} ms during the flood`);
  });

  it('the log goes with the sandbox', async () => {
    await world.json(['rm', '--force', 'flood']);
    assert.equal((await world.sbx(['network', 'log', 'flood'])).code, 3);
    await create('flood', ['--block-network']);
    assert.deepEqual(await log('flood'), []);
  });
});
