// The gateway's side of egress, without Docker: the proxy's decisions and their reasons, the
// proxy itself against fake upstreams on loopback (its `dial` hook maps the addresses it judged
// to them), the DNS forwarder against a fake upstream that forges answers, the host's addresses
// and the sandboxes' subnets.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';
import { compilePolicy, normalizePolicy, type CompiledPolicy, type NetworkPolicyInput } from '../../src/core/network-policy.ts';
import { checkRequest, judgeAddress, judgeName, parseHost, preferFamily, type Candidate } from '../../src/gateway/egress-judge.ts';
import { EgressProxy } from '../../src/gateway/egress-proxy.ts';
import { DnsForwarder, answers, freshId } from '../../src/gateway/dns-forwarder.ts';
import { HostAddresses, canonicalAddress, isLoopbackish } from '../../src/gateway/host-addresses.ts';
import { SandboxSources } from '../../src/gateway/sandbox-sources.ts';
import type { LearnedAddress } from '../../src/net/nft-rules.ts';

const compile = (input: NetworkPolicyInput): CompiledPolicy => compilePolicy(normalizePolicy(input));
const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const pub = (address: string): Candidate => ({ address, host: false, sandbox: false });

// ---- decisions and their reasons ----------------------------------------------------------------

describe('parseHost', () => {
  const cases: Array<[string, ReturnType<typeof parseHost>]> = [
    ['allowed.test', { name: 'allowed.test' }],
    ['Allowed.Test.:8080', { name: 'allowed.test', port: 8080 }],
    ['198.18.0.1', { address: '198.18.0.1' }],
    ['198.18.0.1:80', { address: '198.18.0.1', port: 80 }],
    ['[2001:2::1]', { address: '2001:2::1' }],
    ['[2001:0002:0:0::1]:80', { address: '2001:2::1', port: 80 }],
    ['[::ffff:127.0.0.1]', { address: '127.0.0.1' }],
    ['localhost', { name: 'localhost' }],
  ];
  for (const [text, want] of cases) it(`"${text}"`, () => assert.deepEqual(parseHost(text), want));
  for (const bad of ['', 'a b', 'allowed.test, denied.test', 'allowed.test:80@denied.test', 'a/b', '[nope]', '[fe80::1%eth0]', 'x:99999', 'x:0', '2001:2::1', 'a..b', '-a.test']) {
    it(`rejects "${bad}"`, () => assert.equal(parseHost(bad), undefined));
  }
});

describe('checkRequest: one request names one host', () => {
  const raw = (...hosts: string[]) => hosts.flatMap((h) => ['Host', h]);
  it('origin form with one Host', () => {
    assert.deepEqual(checkRequest('/x?y', raw('vhost-a.test')), { ok: true, target: { name: 'vhost-a.test' }, path: '/x?y' });
  });
  it('two Host headers are refused, whatever their case or values', () => {
    for (const headers of [raw('vhost-a.test', 'vhost-b.test'), raw('vhost-a.test', 'vhost-a.test'), ['Host', 'vhost-a.test', 'hOsT', 'vhost-b.test']]) {
      assert.deepEqual(checkRequest('/', headers), { ok: false, reason: 'sbx: the request has more than one Host header' });
    }
  });
  it('absolute form is taken when its authority is the Host, and goes upstream in origin form', () => {
    assert.deepEqual(checkRequest('http://vhost-a.test/p?q', raw('vhost-a.test')), { ok: true, target: { name: 'vhost-a.test' }, path: '/p?q' });
    assert.deepEqual(checkRequest('HTTP://VHOST-A.test:80', raw('vhost-a.test')), { ok: true, target: { name: 'vhost-a.test' }, path: '/' });
    assert.deepEqual(checkRequest('http://vhost-a.test?q', raw('vhost-a.test:80')), { ok: true, target: { name: 'vhost-a.test', port: 80 }, path: '/?q' });
  });
  it('absolute form naming another host (or port, scheme, or a userinfo trick) is refused', () => {
    for (const url of ['http://vhost-b.test/', 'http://vhost-a.test:8080/', 'https://vhost-a.test/', 'http://vhost-a.test@vhost-b.test/', 'http://vhost-b.test#@vhost-a.test/', 'ftp://vhost-a.test/']) {
      const r = checkRequest(url, raw('vhost-a.test'));
      assert.equal(r.ok, false, url);
      assert.match((r as { reason: string }).reason, /^sbx: the request target's authority ".*" is not its Host header "vhost-a\.test"$/, url);
    }
    assert.equal(checkRequest('vhost-b.test:80', raw('vhost-a.test')).ok, false, 'authority form outside CONNECT');
  });
  it('a Host that names no host is refused; no Host at all (HTTP/1.0) is judged by destination', () => {
    assert.deepEqual(checkRequest('/', raw('a b')), { ok: false, reason: 'sbx: the Host header "a b" names no host' });
    assert.deepEqual(checkRequest('/', ['Host', 'x\r\ny']), { ok: false, reason: 'sbx: the Host header "x??y" names no host' });
    assert.deepEqual(checkRequest('/', []), { ok: true, target: {}, path: '/' });
    assert.equal(checkRequest('http://vhost-a.test/', []).ok, false);
  });
});

describe('judgeName and judgeAddress: the proxy refuses with one line that says why', () => {
  const blockA = compile({ mode: 'block-all', allowOut: ['vhost-a.test'] });
  const allowAll = compile({ denyOut: ['denied.test'] });
  it('a name outside the allow list', () => {
    assert.deepEqual(judgeName(blockA, 'vhost-b.test', 80, [pub('198.18.0.6')]), { ok: false, status: 403, reason: "sbx: vhost-b.test is not in this sandbox's egress allow list", rule: 'mode block-all' });
    assert.deepEqual(judgeName(blockA, 'VHOST-A.test.', 80, [pub('198.18.0.6')]), { ok: true, address: '198.18.0.6', toHost: false, rule: 'allowOut vhost-a.test' });
  });
  it('a denied name in allow-all', () => {
    assert.deepEqual(judgeName(allowAll, 'denied.test', 80, [pub('198.18.0.2')]), { ok: false, status: 403, reason: "sbx: denied.test is denied by this sandbox's egress policy", rule: 'denyOut denied.test' });
  });
  it('a name:port entry opens its port only', () => {
    const p = compile({ mode: 'block-all', allowOut: ['allowed.test:8080'] });
    assert.deepEqual(judgeName(p, 'allowed.test', 80, [pub('198.18.0.1')]), { ok: false, status: 403, reason: "sbx: allowed.test is not allowed on port 80 by this sandbox's egress policy", rule: 'mode block-all' });
  });
  it('a denied port in allow-all', () => {
    assert.deepEqual(judgeName(compile({ denyPorts: ['80'], denyOut: ['x.test'] }), 'other.test', 80, [pub('198.18.0.3')]), { ok: false, status: 403, reason: "sbx: port 80 is denied by this sandbox's egress policy", rule: 'denyPorts 80' });
  });
  it('a protected address, the host and loopback (as Host or as what a name resolves to)', () => {
    const lo: Candidate = { address: '127.0.0.1', host: true, sandbox: false };
    assert.deepEqual(judgeAddress(allowAll, lo, 80), { ok: false, status: 403, reason: 'sbx: 127.0.0.1 is a protected address (host, loopback or private network)', rule: 'default: protected address' });
    assert.deepEqual(judgeAddress(allowAll, { address: '198.19.255.1', host: true, sandbox: false }, 80), { ok: false, status: 403, reason: 'sbx: 198.19.255.1 is a protected address (host, loopback or private network)', rule: 'default: host address' });
    assert.deepEqual(judgeAddress(allowAll, pub('10.203.77.1'), 80), { ok: false, status: 403, reason: 'sbx: 10.203.77.1 is a protected address (host, loopback or private network)', rule: 'default: protected address' });
    assert.deepEqual(judgeAddress(allowAll, pub('0.0.0.0'), 80).ok, false);
    assert.deepEqual(judgeName(allowAll, 'rebind.test', 80, [lo]), { ok: false, status: 403, reason: 'sbx: rebind.test resolves only to protected addresses (host, loopback, private network or sandboxes)', rule: 'default: protected address' });
    // DNS rebinding with one good address among bad ones: only the good one is dialled.
    assert.deepEqual(judgeName(allowAll, 'mixed.test', 80, [lo, pub('10.0.0.1'), pub('198.18.0.3')]), { ok: true, address: '198.18.0.3', toHost: false, rule: 'mode allow-all' });
  });
  it('another sandbox, always, even when an address entry names it', () => {
    const other: Candidate = { address: '172.30.0.2', host: false, sandbox: true };
    const reason = "sbx: 172.30.0.2 is a sandbox's address (sandboxes cannot reach each other)";
    assert.deepEqual(judgeAddress(allowAll, other, 80), { ok: false, status: 403, reason, rule: 'default: sandbox address' });
    assert.deepEqual(judgeAddress(compile({ allowOut: ['172.30.0.0/16'], denyOut: ['x.test'] }), other, 80), { ok: false, status: 403, reason, rule: 'default: sandbox address' });
    assert.equal(judgeName(compile({ allowOut: ['all', '172.30.0.0/16'] }), 'box.test', 80, [other]).ok, false);
  });
  it('host entries open the host, not loopback; address entries open what they name', () => {
    const host = compile({ allowOut: ['host:80'], denyOut: ['x.test'] });
    assert.deepEqual(judgeAddress(host, { address: '198.19.255.1', host: true, sandbox: false }, 80), { ok: true, address: '198.19.255.1', toHost: true, rule: 'allowOut host:80' });
    assert.equal(judgeAddress(host, { address: '198.19.255.1', host: true, sandbox: false }, 443).ok, false, 'host:80 is port 80 only');
    assert.equal(judgeAddress(host, { address: '127.0.0.1', host: true, sandbox: false }, 80).ok, false, 'loopback is not opened by host');
    const lo = compile({ allowOut: ['127.0.0.1'], denyOut: ['x.test'] });
    assert.deepEqual(judgeAddress(lo, { address: '127.0.0.1', host: true, sandbox: false }, 80), { ok: true, address: '127.0.0.1', toHost: false, rule: 'allowOut 127.0.0.1' });
    const priv = compile({ allowOut: ['10.203.77.1'], denyOut: ['x.test'] });
    assert.deepEqual(judgeAddress(priv, pub('10.203.77.1'), 80), { ok: true, address: '10.203.77.1', toHost: false, rule: 'allowOut 10.203.77.1' });
  });
  it('by address in block-all; the address of a denied name in allow-all', () => {
    assert.deepEqual(judgeAddress(blockA, pub('198.18.0.6'), 80), { ok: false, status: 403, reason: "sbx: 198.18.0.6 is not in this sandbox's egress allow list", rule: 'mode block-all' });
    assert.deepEqual(judgeAddress(allowAll, pub('198.18.0.2'), 80, new Set(['198.18.0.2'])), { ok: false, status: 403, reason: "sbx: 198.18.0.2 is an address of a name this sandbox's egress policy denies", rule: 'default: a denied name\'s address' });
    assert.deepEqual(judgeAddress(compile({ denyOut: ['198.18.0.2'] }), pub('198.18.0.2'), 80), { ok: false, status: 403, reason: "sbx: 198.18.0.2 is denied by this sandbox's egress policy", rule: 'denyOut 198.18.0.2' });
  });
  it('a name that does not resolve: 502', () => {
    assert.deepEqual(judgeName(allowAll, 'nx.test', 80, []), { ok: false, status: 502, reason: 'sbx: nx.test does not resolve', rule: 'default: no address' });
  });
  it('the client family first', () => {
    const c = [pub('198.18.0.1'), pub('2001:2::1'), pub('198.18.0.2')];
    assert.deepEqual(preferFamily(c, 6).map((x) => x.address), ['2001:2::1', '198.18.0.1', '198.18.0.2']);
    assert.deepEqual(preferFamily(c, 4).map((x) => x.address), ['198.18.0.1', '198.18.0.2', '2001:2::1']);
  });
});

describe('HostAddresses', () => {
  it('knows loopback and the unspecified addresses without asking, in every spelling', () => {
    const h = new HostAddresses({ read: () => ({}) });
    for (const a of ['127.0.0.1', '127.9.9.9', '0.0.0.0', '::', '::1', '::ffff:127.0.0.1', '0:0:0:0:0:0:0:1']) assert.ok(h.has(a), a);
    assert.ok(isLoopbackish('0.1.2.3'));
    assert.equal(h.has('198.18.0.1'), false);
  });
  it("reads the interfaces' addresses, and again on a miss once the list is a little old", async () => {
    let list = [{ address: '198.19.255.1' }, { address: 'fe80::1%eth0' }, { address: '2001:db8::0:1' }];
    let reads = 0;
    const h = new HostAddresses({ read: () => (reads++, { eth0: list as never }), missAgeMs: 20, maxAgeMs: 10_000 });
    assert.ok(h.has('198.19.255.1'));
    assert.ok(h.has('::ffff:198.19.255.1'));
    assert.ok(h.has('fe80::1'));
    assert.ok(h.has('2001:db8::1'));
    const before = reads;
    assert.equal(h.has('203.0.113.9'), false);
    assert.equal(reads, before, 'a miss right after a read reads nothing');
    list = [...list, { address: '203.0.113.9' }];
    await delay(30);
    assert.ok(h.has('203.0.113.9'), 'a new address is found on the next miss');
  });
  it('canonical spellings', () => {
    assert.equal(canonicalAddress('::ffff:10.0.0.1'), '10.0.0.1');
    assert.equal(canonicalAddress('2001:0db8:0000::0001'), '2001:db8::1');
    assert.equal(canonicalAddress('nope'), undefined);
  });
});

describe('SandboxSources', () => {
  it('matches IPv4 and IPv6 subnets; destinations reload only when told or after a while', async () => {
    let calls = 0;
    const nets = new Map([
      ['box1', { subnet: '172.30.0.0/16', gateway: '172.30.0.1', subnet6: 'fd5b:1:2:3::/64' }],
      ['box2', { subnet: '172.31.0.0/16', gateway: '172.31.0.1' }],
    ]);
    const s = new SandboxSources({ listSandboxNetworks: async () => (calls++, nets) }, '/home');
    assert.equal(await s.find('172.30.0.2'), 'box1');
    assert.equal(await s.find('fd5b:1:2:3::2'), 'box1');
    assert.equal(await s.find('::ffff:172.31.0.9'), 'box2');
    const loaded = calls;
    for (let i = 0; i < 5; i++) assert.equal(await s.owner('198.18.0.1'), undefined);
    assert.equal(calls, loaded, 'misses on destinations do not reload');
    nets.set('box3', { subnet: '172.29.0.0/16', gateway: '172.29.0.1' });
    s.invalidate();
    assert.equal(await s.owner('172.29.0.5'), 'box3');
    assert.equal(calls, loaded + 1);
  });

  it("a removed sandbox's subnet, now another's, is not judged as the removed one's once told (nor when the engine does not answer)", async () => {
    let nets = new Map([['old', { subnet: '10.213.78.0/28', gateway: '10.213.78.1' }]]);
    let fail = false;
    const s = new SandboxSources({ listSandboxNetworks: async () => { if (fail) throw new Error('engine down'); return nets; } }, '/home');
    assert.equal(await s.find('10.213.78.2'), 'old');
    nets = new Map([['next', { subnet: '10.213.78.0/28', gateway: '10.213.78.1' }]]);
    s.invalidate();
    assert.equal(await s.find('10.213.78.2'), 'next');
    fail = true;
    s.invalidate();
    assert.equal(await s.find('10.213.78.2'), undefined, 'no sandbox rather than a stale one');
    await new Promise((r) => setTimeout(r, 300)); // (a failed load is not retried for 250 ms)
    fail = false;
    assert.equal(await s.find('10.213.78.2'), 'next');
  });

  it('an invalidation while a load is on its way is not lost; a failed load is not retried by every lookup', async () => {
    const net = { subnet: '10.213.78.0/28', gateway: '10.213.78.1' };
    let nets = new Map([['old', net]]);
    let gate: Promise<void> | undefined;
    let release = () => {};
    let calls = 0;
    let fail = false;
    const s = new SandboxSources({
      listSandboxNetworks: async () => {
        calls++;
        const seen = nets;
        if (gate) await gate;
        if (fail) throw new Error('engine down');
        return seen;
      },
    }, '/home');
    gate = new Promise((r) => (release = r));
    const lookup = s.find('10.213.78.2'); // its load sees old's network
    await new Promise((r) => setImmediate(r));
    nets = new Map([['next', net]]);
    s.invalidate();
    gate = undefined;
    release();
    assert.equal(await lookup, 'next', 'the load that began before the change does not count');
    fail = true;
    s.invalidate();
    const before = calls;
    for (let i = 0; i < 20; i++) assert.equal(await s.find('10.213.78.2'), undefined);
    assert.ok(calls - before <= 2, `a failed load is not asked again by each lookup (${calls - before} asks)`);
  });
});

// ---- the proxy against fake upstreams ----------------------------------------------------------

/** A name-based virtual host server (shared hosting): answers "<Host>", logs every request. */
interface Vhosts {
  port: number;
  seen: string[];
  close(): void;
}

async function startVhosts(): Promise<Vhosts> {
  const seen: string[] = [];
  const server: HttpServer = createHttpServer(
    // Upgrade: echo is honoured (101, then every byte echoed); any other Upgrade is ignored, and
    // the connection stays open for the next request, as most servers do.
    { shouldUpgradeCallback: (req: IncomingMessage) => String(req.headers.upgrade).toLowerCase() === 'echo' } as never,
    (req, res) => {
      seen.push(`${req.method} ${req.headers.host} ${req.url}`);
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => res.end(`${req.headers.host}${body ? ` body=${body}` : ''}\n`));
    },
  );
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    seen.push(`UPGRADE ${req.headers.host} ${req.url}`);
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n');
    if (head.length) socket.write(head);
    socket.pipe(socket);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, seen, close: () => (server.closeAllConnections(), server.close()) };
}

/** Sends raw bytes to the proxy and collects everything until the proxy closes (or `idleMs` of silence). */
function exchange(port: number, bytes: string | Buffer, opts: { host?: string; idleMs?: number; onData?: (all: string, s: Socket) => void } = {}): Promise<{ text: string; end: 'closed' | 'idle' | 'reset' }> {
  return new Promise((resolve) => {
    const s = connect(port, opts.host ?? '127.0.0.1');
    let text = '';
    let timer: NodeJS.Timeout;
    const finish = (end: 'closed' | 'idle' | 'reset') => {
      clearTimeout(timer);
      s.destroy();
      resolve({ text, end });
    };
    const idle = () => {
      clearTimeout(timer);
      timer = setTimeout(() => finish('idle'), opts.idleMs ?? 400);
    };
    s.on('connect', () => {
      s.write(bytes);
      idle();
    });
    s.on('data', (d) => {
      text += d.toString('latin1');
      opts.onData?.(text, s);
      idle();
    });
    s.on('end', () => finish('closed'));
    s.on('error', () => finish('reset'));
  });
}

describe('EgressProxy (fake upstreams on loopback)', () => {
  let vhosts: Vhosts;
  let tlsSeen: Buffer[];
  let tlsServer: Server;
  let tlsPort = 0;
  let proxy: EgressProxy;
  let ports: { http: number; tls: number };
  let policy: CompiledPolicy;
  const dialled: string[] = [];
  const logs: string[] = [];
  const hostOwn = new Set(['198.19.255.1']);
  const DNS: Record<string, string[]> = {
    'vhost-a.test': ['198.18.0.6'],
    'vhost-b.test': ['198.18.0.6'],
    'denied.test': ['198.18.0.2'],
    'rebind.test': ['127.0.0.1'],
    'private.test': ['10.203.77.1'],
    'hostip.test': ['198.19.255.1'],
    'box.test': ['172.30.0.2'],
    'dual.test': ['198.18.0.7', '2001:db8::7'],
  };

  before(async () => {
    vhosts = await startVhosts();
    tlsSeen = [];
    tlsServer = createServer((s) => {
      s.on('data', (d) => tlsSeen.push(d));
      s.on('error', () => {});
    });
    await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', r));
    tlsPort = (tlsServer.address() as { port: number }).port;
    proxy = new EgressProxy({
      sandboxOf: async (a) => (a === '127.0.0.1' || a === '::1' ? 'box' : undefined),
      policyOf: (id) => (id === 'box' ? policy : undefined),
      resolver: { addresses: async (name) => DNS[name] ?? [] },
      isHost: (a) => isLoopbackish(a) || hostOwn.has(a),
      isSandbox: async (a) => a.startsWith('172.30.'),
      log: (line) => logs.push(line),
      dial: (address, port) => {
        dialled.push(`${address}:${port}`);
        return { host: '127.0.0.1', port: port === 443 ? tlsPort : vhosts.port };
      },
    });
    ports = await proxy.listen();
  });
  after(() => {
    proxy.close();
    vhosts.close();
    tlsServer.close();
  });
  const fresh = (input: NetworkPolicyInput) => {
    policy = compile(input);
    vhosts.seen.length = 0;
    dialled.length = 0;
  };
  const req = (host: string, path = '/', extra = '') => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;
  const bodyOf = (text: string) => text.slice(text.indexOf('\r\n\r\n') + 4);

  it('one request, one decision: an allowed name passes, a second request on the connection to a denied one gets a 403 that says why, and the connection closes', async () => {
    fresh({ mode: 'block-all', allowOut: ['vhost-a.test'] });
    const r = await exchange(ports.http, req('vhost-a.test') + req('vhost-a.test', '/2') + req('vhost-b.test', '/3') + req('vhost-a.test', '/4'));
    const responses = r.text.split(/(?=HTTP\/1\.1 )/);
    assert.equal(responses.length, 3, r.text);
    assert.match(responses[0]!, /^HTTP\/1\.1 200 /);
    assert.match(responses[1]!, /^HTTP\/1\.1 200 /);
    assert.match(responses[2]!, /^HTTP\/1\.1 403 Forbidden\r\n/);
    assert.match(responses[2]!, /\r\nConnection: close\r\n/i);
    assert.match(responses[2]!, /\r\nContent-Type: text\/plain; charset=utf-8\r\n/i);
    assert.equal(bodyOf(responses[2]!), "sbx: vhost-b.test is not in this sandbox's egress allow list\n");
    assert.equal(r.end, 'closed');
    assert.deepEqual(vhosts.seen, ['GET vhost-a.test /', 'GET vhost-a.test /2'], 'nothing after the refusal reached the upstream');
    assert.ok(logs.some((l) => l.includes("refused http vhost-b.test for sandbox box: vhost-b.test is not in this sandbox's egress allow list")));
  });

  it('pipelined Upgrade smuggling: an upstream that ignores the Upgrade never sees what was pipelined behind it', async () => {
    fresh({ mode: 'block-all', allowOut: ['vhost-a.test'] });
    const attack = req('vhost-a.test', '/up', 'Connection: Upgrade\r\nUpgrade: x\r\n') + req('vhost-b.test', '/smuggled');
    const r = await exchange(ports.http, attack);
    assert.match(r.text, /^HTTP\/1\.1 200 /);
    assert.match(r.text, /\r\nConnection: close\r\n/i);
    assert.equal(bodyOf(r.text), 'vhost-a.test\n');
    assert.equal(r.end, 'closed');
    assert.deepEqual(vhosts.seen, ['GET vhost-a.test /up']);
  });

  it('an upstream that answers 101 gets the pipelined bytes as the new protocol (echoed, never parsed)', async () => {
    fresh({ mode: 'block-all', allowOut: ['vhost-a.test'] });
    const pipelined = req('vhost-b.test', '/smuggled');
    const r = await exchange(ports.http, req('vhost-a.test', '/ws', 'Connection: Upgrade\r\nUpgrade: echo\r\n') + pipelined);
    assert.match(r.text, /^HTTP\/1\.1 101 Switching Protocols\r\n/);
    assert.match(r.text, /\r\nupgrade: echo\r\n/i);
    assert.ok(r.text.endsWith(`\r\n\r\n${pipelined}`), r.text);
    assert.deepEqual(vhosts.seen, ['UPGRADE vhost-a.test /ws']);
    // And the joined connection keeps working both ways.
    let sent = false;
    const live = await exchange(ports.http, req('vhost-a.test', '/ws', 'Connection: Upgrade\r\nUpgrade: echo\r\n'), {
      onData: (all, s) => {
        if (!sent && all.includes('\r\n\r\n')) {
          sent = true;
          s.write('ping after 101');
        }
      },
    });
    assert.ok(live.text.endsWith('\r\n\r\nping after 101'), live.text);
  });

  it('an Upgrade request with a body goes upstream as an ordinary request (no Upgrade), its body framed', async () => {
    fresh({ mode: 'block-all', allowOut: ['vhost-a.test'] });
    const r = await exchange(ports.http, 'POST /h2c HTTP/1.1\r\nHost: vhost-a.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\nContent-Length: 5\r\n\r\nhello' + req('vhost-b.test', '/smuggled'));
    assert.match(r.text, /^HTTP\/1\.1 200 /);
    assert.ok(r.text.includes('vhost-a.test body=hello'), r.text);
    // (Node's parser stops after a request that asked for an Upgrade: what follows is never served.)
    assert.deepEqual(vhosts.seen, ['POST vhost-a.test /h2c'], 'nothing pipelined behind it went upstream');
  });

  it('an Upgrade to a refused name gets the 403, and nothing is dialled', async () => {
    fresh({ mode: 'block-all', allowOut: ['vhost-a.test'] });
    const r = await exchange(ports.http, req('vhost-b.test', '/ws', 'Connection: Upgrade\r\nUpgrade: echo\r\n'));
    assert.match(r.text, /^HTTP\/1\.1 403 /);
    assert.equal(bodyOf(r.text), "sbx: vhost-b.test is not in this sandbox's egress allow list\n");
    assert.equal(r.end, 'closed');
    assert.deepEqual(dialled, []);
  });

  it('absolute-form targets: another authority than Host is refused; the same goes upstream in origin form', async () => {
    fresh({ mode: 'block-all', allowOut: ['vhost-a.test'] });
    const bad = await exchange(ports.http, 'GET http://vhost-b.test/x HTTP/1.1\r\nHost: vhost-a.test\r\n\r\n');
    assert.match(bad.text, /^HTTP\/1\.1 403 /);
    assert.equal(bodyOf(bad.text), 'sbx: the request target\'s authority "vhost-b.test" is not its Host header "vhost-a.test"\n');
    const good = await exchange(ports.http, 'GET http://vhost-a.test/x?y HTTP/1.1\r\nHost: vhost-a.test\r\n\r\n');
    assert.match(good.text, /^HTTP\/1\.1 200 /);
    assert.deepEqual(vhosts.seen, ['GET vhost-a.test /x?y']);
  });

  it('two Host headers are refused', async () => {
    fresh({ mode: 'block-all', allowOut: ['vhost-a.test', 'vhost-b.test'] });
    const r = await exchange(ports.http, 'GET / HTTP/1.1\r\nHost: vhost-a.test\r\nHost: vhost-b.test\r\n\r\n');
    assert.match(r.text, /^HTTP\/1\.1 403 /);
    assert.equal(bodyOf(r.text), 'sbx: the request has more than one Host header\n');
    assert.deepEqual(vhosts.seen, []);
  });

  it("a chunked GET body stays a body upstream (Node would send it unframed: the upstream's next request)", async () => {
    fresh({ mode: 'block-all', allowOut: ['vhost-a.test'] });
    const inner = req('vhost-b.test', '/smuggled');
    const chunked = `${inner.length.toString(16)}\r\n${inner}\r\n0\r\n\r\n`;
    const r = await exchange(ports.http, `GET / HTTP/1.1\r\nHost: vhost-a.test\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`);
    assert.match(r.text, /^HTTP\/1\.1 200 /);
    assert.deepEqual(vhosts.seen, ['GET vhost-a.test /'], 'one request upstream');
    assert.ok(r.text.includes('body=GET /smuggled'), r.text);
  });

  it('protected destinations through any name rule: loopback, the host, private ranges, other sandboxes, DNS rebinding', async () => {
    fresh({ denyOut: ['denied.test'] });
    const cases: Array<[string, string]> = [
      ['127.0.0.1', 'sbx: 127.0.0.1 is a protected address (host, loopback or private network)'],
      ['0.0.0.0', 'sbx: 0.0.0.0 is a protected address (host, loopback or private network)'],
      ['[::1]', 'sbx: ::1 is a protected address (host, loopback or private network)'],
      ['[::ffff:127.0.0.1]', 'sbx: 127.0.0.1 is a protected address (host, loopback or private network)'],
      ['198.19.255.1', 'sbx: 198.19.255.1 is a protected address (host, loopback or private network)'],
      ['10.203.77.1', 'sbx: 10.203.77.1 is a protected address (host, loopback or private network)'],
      ['172.30.0.2', "sbx: 172.30.0.2 is a sandbox's address (sandboxes cannot reach each other)"],
      ['rebind.test', 'sbx: rebind.test resolves only to protected addresses (host, loopback, private network or sandboxes)'],
      ['private.test', 'sbx: private.test resolves only to protected addresses (host, loopback, private network or sandboxes)'],
      ['hostip.test', 'sbx: hostip.test resolves only to protected addresses (host, loopback, private network or sandboxes)'],
      ['box.test', 'sbx: box.test resolves only to protected addresses (host, loopback, private network or sandboxes)'],
      ['denied.test', "sbx: denied.test is denied by this sandbox's egress policy"],
    ];
    for (const [host, reason] of cases) {
      const r = await exchange(ports.http, req(host));
      assert.match(r.text, /^HTTP\/1\.1 403 /, host);
      assert.equal(bodyOf(r.text), `${reason}\n`, host);
    }
    assert.deepEqual(dialled, [], 'nothing was dialled');
    assert.deepEqual(vhosts.seen, []);
  });

  it('address and host entries open what they name', async () => {
    fresh({ denyOut: ['denied.test'], allowOut: ['10.203.77.1', 'host:80'] });
    for (const host of ['10.203.77.1', 'private.test', '198.19.255.1', 'hostip.test']) {
      const r = await exchange(ports.http, req(host));
      assert.match(r.text, /^HTTP\/1\.1 200 /, host);
    }
    assert.deepEqual(dialled, ['10.203.77.1:80', '10.203.77.1:80', '198.19.255.1:80', '198.19.255.1:80']);
    const lo = await exchange(ports.http, req('127.0.0.1'));
    assert.match(lo.text, /^HTTP\/1\.1 403 /, 'host does not open loopback');
  });

  it('the upstream is dialled in the family the client used (dual-stack listener)', async () => {
    fresh({ mode: 'block-all', allowOut: ['dual.test'] });
    assert.match((await exchange(ports.http, req('dual.test'))).text, /^HTTP\/1\.1 200 /);
    assert.match((await exchange(ports.http, req('dual.test'), { host: '::1' })).text, /^HTTP\/1\.1 200 /);
    assert.deepEqual(dialled, ['198.18.0.7:80', '2001:db8::7:80']);
  });

  it('TLS: the SNI decides; a refusal is a reset and nothing is dialled', async () => {
    fresh({ mode: 'block-all', allowOut: ['vhost-a.test'] });
    const hello = (name: string) => clientHello(name);
    const refused = await exchange(ports.tls, hello('vhost-b.test'));
    assert.equal(refused.end, 'reset');
    const rebind = await exchange(ports.tls, hello('rebind.test'));
    assert.equal(rebind.end, 'reset');
    assert.deepEqual(dialled, []);
    tlsSeen.length = 0;
    await exchange(ports.tls, hello('vhost-a.test'));
    assert.deepEqual(dialled, ['198.18.0.6:443']);
    assert.deepEqual(Buffer.concat(tlsSeen), hello('vhost-a.test'), 'the ClientHello went on unchanged');
    assert.ok(logs.some((l) => l.includes('refused tls vhost-b.test')));
  });

  it('CONNECT is refused with a 403', async () => {
    fresh({ allowOut: ['all'] });
    const r = await exchange(ports.http, 'CONNECT vhost-a.test:443 HTTP/1.1\r\nHost: vhost-a.test:443\r\n\r\n');
    assert.match(r.text, /^HTTP\/1\.1 403 /);
    assert.deepEqual(dialled, []);
  });

  it('a client that is no sandbox is reset', async () => {
    fresh({ allowOut: ['all'] });
    const other = new EgressProxy({ sandboxOf: async () => undefined, policyOf: () => policy, resolver: { addresses: async () => [] }, isHost: () => false, isSandbox: async () => false });
    const p = await other.listen();
    try {
      assert.equal((await exchange(p.http, req('vhost-a.test'))).end, 'reset');
    } finally {
      other.close();
    }
  });
});

/** A minimal TLS ClientHello record carrying one SNI name. */
function clientHello(name: string): Buffer {
  const host = Buffer.from(name);
  const sniEntry = Buffer.concat([Buffer.from([0]), u16(host.length), host]);
  const sniList = Buffer.concat([u16(sniEntry.length), sniEntry]);
  const ext = Buffer.concat([u16(0), u16(sniList.length), sniList]);
  const body = Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32, 7), Buffer.from([0]), u16(2), Buffer.from([0x13, 0x01]), Buffer.from([1, 0]), u16(ext.length), ext]);
  const hs = Buffer.concat([Buffer.from([1]), u24(body.length), body]);
  return Buffer.concat([Buffer.from([22, 3, 1]), u16(hs.length), hs]);
}
function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
function u24(n: number): Buffer {
  return Buffer.from([(n >> 16) & 255, (n >> 8) & 255, n & 255]);
}

// ---- the DNS forwarder against a forging upstream ----------------------------------------------

function query(name: string, id = 0x1234, type: 'A' | 'AAAA' = 'A'): Buffer {
  return dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] });
}

type Behaviour = 'honest' | 'forge-first' | 'wrong-question-first' | 'truncate';

/**
 * An upstream on 127.0.0.1 that answers from `records`. `forge-first`: before its real answer
 * (50 ms late) a second socket sends a forged one with the right id and question;
 * `wrong-question-first`: its own socket first answers with the right id but another question.
 */
async function startUpstream(records: Record<string, string[]>, behaviour: () => Behaviour) {
  const udp: UdpSocket = createSocket('udp4');
  const forger: UdpSocket = createSocket('udp4');
  const seenIds: number[] = [];
  const sources: string[] = [];
  await new Promise<void>((r) => udp.bind(0, '127.0.0.1', () => r()));
  await new Promise<void>((r) => forger.bind(0, '127.0.0.1', () => r()));
  const port = udp.address().port;
  const answer = (q: dnsPacket.DecodedPacket, over: { name?: string; data?: string; tc?: boolean } = {}) => {
    const question = { ...q.questions![0]!, name: over.name ?? q.questions![0]!.name };
    const data = over.data ? [over.data] : (records[question.name.toLowerCase()] ?? []);
    return dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags: dnsPacket.RECURSION_AVAILABLE | (over.tc ? dnsPacket.TRUNCATED_RESPONSE : 0),
      questions: [question],
      answers: over.tc ? [] : data.map((d) => ({ type: d.includes(':') ? ('AAAA' as const) : ('A' as const), name: question.name, ttl: 60, data: d })),
    });
  };
  udp.on('message', (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    seenIds.push(q.id!);
    sources.push(`${rinfo.address}:${rinfo.port}`);
    const b = behaviour();
    if (b === 'forge-first') {
      forger.send(answer(q, { data: '6.6.6.6' }), rinfo.port, rinfo.address);
      setTimeout(() => udp.send(answer(q), rinfo.port, rinfo.address), 50);
    } else if (b === 'wrong-question-first') {
      udp.send(answer(q, { name: 'other.test', data: '6.6.6.6' }), rinfo.port, rinfo.address);
      setTimeout(() => udp.send(answer(q), rinfo.port, rinfo.address), 50);
    } else {
      udp.send(answer(q, { tc: b === 'truncate' }), rinfo.port, rinfo.address);
    }
  });
  const tcpIds: number[] = [];
  const tcp = createServer((s) => {
    s.on('error', () => {});
    s.once('data', (buf: Buffer) => {
      const q = dnsPacket.decode(buf.subarray(2));
      tcpIds.push(q.id!);
      const a = answer(q);
      s.end(Buffer.concat([u16(a.length), a]));
    });
  });
  await new Promise<void>((r) => tcp.listen(port, '127.0.0.1', () => r()));
  return { port, seenIds, tcpIds, sources, close: () => (udp.close(), forger.close(), tcp.close()) };
}

describe('DnsForwarder: forged answers, ids, questions, protected records', () => {
  let behaviour: Behaviour = 'honest';
  let up: Awaited<ReturnType<typeof startUpstream>>;
  before(async () => {
    up = await startUpstream(
      {
        'allowed.test': ['198.18.0.1'],
        'rebind.test': ['127.0.0.1', '::1'],
        'private.test': ['10.203.77.1'],
        'mixed.test': ['127.0.0.1', '198.18.0.3', '169.254.169.254', 'fd00::1', '2001:2::3'],
        'hostip.test': ['198.19.255.1'],
        'box.test': ['203.0.113.5'],
      },
      () => behaviour,
    );
  });
  after(() => up.close());

  function forwarder(input: NetworkPolicyInput) {
    const policy = compile(input);
    const learned: Array<{ name: string; addresses: Array<Omit<LearnedAddress, 'ports'>> }> = [];
    const logs: string[] = [];
    const fwd = new DnsForwarder({
      upstream: { host: '127.0.0.1', port: up.port },
      sandboxOf: async (a) => (a === '172.19.0.2' || a === '::1' || a === '127.0.0.1' ? 'box1' : undefined),
      policyOf: () => policy,
      learn: async (_id, name, addresses) => (learned.push({ name, addresses }), true),
      isHost: (a) => a === '198.19.255.1',
      isSandbox: async (a) => a === '203.0.113.5',
      log: (l) => logs.push(l),
    });
    return { fwd, learned, logs, ask: (msg: Buffer) => fwd.answer(msg, '172.19.0.2') };
  }
  const decode = (b: Buffer | undefined) => {
    assert.ok(b, 'an answer');
    return dnsPacket.decode(b) as dnsPacket.DecodedPacket & { rcode?: string };
  };
  const dataOf = (p: dnsPacket.DecodedPacket) => (p.answers ?? []).map((r) => String((r as { data: unknown }).data));

  it('a forged answer from another port, with the right id and question, is never taken', async () => {
    behaviour = 'forge-first';
    const { ask } = forwarder({ mode: 'block-all', allowOut: ['allowed.test'] });
    const a = decode(await ask(query('allowed.test', 0x4242)));
    assert.deepEqual(dataOf(a), ['198.18.0.1']);
    assert.equal(a.id, 0x4242);
  });

  it('an answer with the right id to another question is never taken', async () => {
    behaviour = 'wrong-question-first';
    const { ask } = forwarder({});
    assert.deepEqual(dataOf(decode(await ask(query('allowed.test', 7)))), ['198.18.0.1']);
  });

  it('each relayed query gets a fresh random id; the sandbox gets its own back', async () => {
    behaviour = 'honest';
    const { ask } = forwarder({});
    const before = up.seenIds.length;
    for (let i = 0; i < 20; i++) assert.equal(decode(await ask(query('allowed.test', 0x1111))).id, 0x1111);
    const ids = up.seenIds.slice(before);
    assert.equal(ids.length, 20);
    assert.ok(!ids.includes(0x1111), 'never the sandbox id');
    assert.ok(new Set(ids).size >= 18, `ids look random: ${ids.join(',')}`);
    assert.ok(new Set(up.sources.slice(before)).size >= 18, 'and come from fresh ports');
  });

  it('freshId never returns the id it is given, and covers 0..65535', () => {
    for (const not of [0, 1, 0x7fff, 0xffff]) for (let i = 0; i < 2000; i++) assert.notEqual(freshId(not), not);
    assert.ok([...Array(5000)].map(() => freshId(0)).every((id) => id >= 1 && id <= 0xffff));
  });

  it('answers(): a response with that id and that one question only', () => {
    const q = { name: 'a.test', type: 'A', class: 'IN' };
    const r = (over: Partial<dnsPacket.Packet>) => dnsPacket.decode(dnsPacket.encode({ type: 'response', id: 9, questions: [{ name: 'A.Test', type: 'A', class: 'IN' }], ...over }));
    assert.ok(answers(r({}), 9, q), 'names compare case-insensitively');
    assert.equal(answers(r({ id: 8 }), 9, q), false);
    assert.equal(answers(r({ type: 'query' }), 9, q), false);
    assert.equal(answers(r({ questions: [{ name: 'a.test', type: 'AAAA', class: 'IN' }] }), 9, q), false);
    assert.equal(answers(r({ questions: [{ name: 'a.test', type: 'A', class: 'IN' }, { name: 'b.test', type: 'A', class: 'IN' }] }), 9, q), false);
  });

  it('the TCP retry of a truncated answer also gets a fresh id', async () => {
    behaviour = 'truncate';
    const { ask } = forwarder({});
    const a = decode(await ask(query('allowed.test', 0x2222)));
    assert.deepEqual(dataOf(a), ['198.18.0.1']);
    assert.equal(a.id, 0x2222);
    assert.notEqual(up.tcpIds.at(-1), 0x2222);
  });

  it('a query must carry exactly one question: two get FORMERR and the upstream is not asked', async () => {
    behaviour = 'honest';
    const { ask } = forwarder({});
    const before = up.seenIds.length;
    const two = dnsPacket.encode({ type: 'query', id: 5, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name: 'allowed.test', class: 'IN' }, { type: 'A', name: 'denied.test', class: 'IN' }] });
    const none = dnsPacket.encode({ type: 'query', id: 6, flags: dnsPacket.RECURSION_DESIRED, questions: [] });
    for (const msg of [two, none]) {
      const a = decode(await ask(msg));
      assert.equal(a.rcode, 'FORMERR');
      assert.equal(a.id, msg.readUInt16BE(0));
    }
    assert.equal(up.seenIds.length, before);
    const notify = Buffer.from(query('allowed.test', 8));
    notify.writeUInt16BE(notify.readUInt16BE(2) | (4 << 11), 2);
    assert.equal(decode(await ask(notify)).rcode, 'NOTIMP');
    const response = Buffer.from(query('allowed.test', 9));
    response.writeUInt16BE(response.readUInt16BE(2) | 0x8000, 2);
    assert.equal(await ask(response), undefined, 'a response is no query');
  });

  it('records of protected, host and sandbox addresses are removed (DNS rebinding), and only the rest is learned', async () => {
    behaviour = 'honest';
    const { ask, learned, logs } = forwarder({ mode: 'block-all', allowOut: ['*.test'] });
    assert.deepEqual(dataOf(decode(await ask(query('rebind.test')))), []);
    assert.deepEqual(dataOf(decode(await ask(query('private.test')))), []);
    assert.deepEqual(dataOf(decode(await ask(query('hostip.test')))), []);
    assert.deepEqual(dataOf(decode(await ask(query('box.test')))), []);
    const mixed = decode(await ask(query('mixed.test', 3)));
    assert.equal(mixed.id, 3);
    assert.equal(mixed.rcode, 'NOERROR');
    assert.deepEqual(dataOf(mixed), ['198.18.0.3', '2001:2::3']);
    assert.deepEqual(learned.map((l) => [l.name, l.addresses.map((a) => a.address)]), [['mixed.test', ['198.18.0.3', '2001:2::3']]]);
    assert.ok(logs.some((l) => l.includes('removed 127.0.0.1, 169.254.169.254, fd00::1 from the answer for mixed.test')), logs.join('\n'));
  });

  it('...unless an address entry names them (or host, for the host\'s own)', async () => {
    behaviour = 'honest';
    const { ask, learned } = forwarder({ mode: 'block-all', allowOut: ['*.test', '10.203.77.1', '127.0.0.0/8', 'host'] });
    assert.deepEqual(dataOf(decode(await ask(query('private.test')))), ['10.203.77.1']);
    assert.deepEqual(dataOf(decode(await ask(query('rebind.test')))), ['127.0.0.1'], '::1 is not named');
    assert.deepEqual(dataOf(decode(await ask(query('hostip.test')))), ['198.19.255.1']);
    assert.deepEqual(learned.map((l) => l.name), ['private.test', 'rebind.test', 'hostip.test']);
  });

  it('an answer with nothing removed is the upstream bytes, with the sandbox id', async () => {
    behaviour = 'honest';
    const { ask } = forwarder({});
    const a = await ask(query('allowed.test', 0x0a0b));
    assert.ok(a);
    const p = dnsPacket.decode(a);
    const again = dnsPacket.encode({ ...p, id: 0x0a0b });
    assert.equal(a.readUInt16BE(0), 0x0a0b);
    assert.equal(a.length, again.length);
  });

  it('listens dual-stack: IPv4 and IPv6 clients, over UDP and TCP', async () => {
    behaviour = 'honest';
    const { fwd } = forwarder({});
    const port = await fwd.listen();
    try {
      for (const [type, host] of [['udp4', '127.0.0.1'], ['udp6', '::1']] as const) {
        const s = createSocket(type);
        const reply = await new Promise<Buffer>((resolve, reject) => {
          const t = setTimeout(() => reject(new Error(`no answer over ${type}`)), 3000);
          s.on('message', (m) => (clearTimeout(t), resolve(m)));
          s.send(query('allowed.test', 0x55), port, host);
        });
        s.close();
        assert.deepEqual(dataOf(decode(reply)), ['198.18.0.1'], type);
      }
      const tcpReply = await new Promise<Buffer>((resolve, reject) => {
        const s = connect(port, '::1', () => {
          const q = query('allowed.test', 0x56);
          s.write(Buffer.concat([u16(q.length), q]));
        });
        s.on('data', (d) => (s.destroy(), resolve(d.subarray(2))));
        s.on('error', reject);
      });
      assert.deepEqual(dataOf(decode(tcpReply)), ['198.18.0.1']);
    } finally {
      fwd.close();
    }
  });
});
