// Red-team findings: each test is an attack that gets past a promise of README "Egress policies" /
// "Security model" today, so each FAILS until the hole is fixed (and a control beside it that
// must pass). Real packets from inside sandboxes, against the fake internet.
// Run as: flock /tmp/sbx-fi.lock node --test test/integration/redteam.test.ts
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { World } from '../helpers.ts';
import { startFakeInternet, type FakeInternet } from '../fake-internet.ts';

let fi: FakeInternet;
let world: World;

before(async () => {
  fi = await startFakeInternet();
  world = new World({ SBX_DNS_UPSTREAM: fi.dnsUpstream });
});
after(async () => {
  await world?.cleanup();
  await fi?.stop();
});

async function create(w: World, name: string, flags: string[] = [], tail: string[] = []): Promise<any> {
  const box = await w.json(['create', '--name', name, ...flags, ...tail]);
  await w.put(name, 'probe.py', '/probe.py');
  return box;
}

async function sh(w: World, box: string, script: string): Promise<string> {
  return (await w.sbx(['exec', box, '--', 'sh', '-c', script])).stdout.trim();
}

/** curl inside the sandbox: status (0: no HTTP answer) and body. */
async function http(w: World, box: string, url: string, ...extra: string[]): Promise<{ status: number; body: string }> {
  const r = await w.sbx(['exec', box, '--', 'curl', '-s', '-k', '-m', '5', '-w', '\n%{http_code}', ...extra, url]);
  const i = r.stdout.lastIndexOf('\n');
  return { status: Number(r.stdout.slice(i + 1)), body: r.stdout.slice(0, i) };
}

// Sends bytes (hex on stdin) on one TCP connection and prints what came back as hex, then how it ended.
const RAW_HEX = `
import socket, sys
data = bytes.fromhex(sys.stdin.read().strip())
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.settimeout(2)
out, end = b"", "closed"
try:
    s.sendall(data)
    while True:
        c = s.recv(65536)
        if not c:
            break
        out += c
except socket.timeout:
    end = "idle"
except OSError:
    end = "reset"
print(out.hex(), end)
`;

async function rawHex(w: World, box: string, host: string, port: number, bytes: Buffer): Promise<{ reply: Buffer; end: string }> {
  const r = await w.sbx(['exec', '-i', box, '--', 'python3', '-c', RAW_HEX, host, String(port)], { input: bytes.toString('hex') });
  const [hex, end] = r.stdout.trim().split(' ').length === 2 ? r.stdout.trim().split(' ') : ['', r.stdout.trim()];
  return { reply: Buffer.from(hex!, 'hex'), end: end! };
}

/** A TLS 1.2 ClientHello whose SNI is exactly `sni` (any bytes, a NUL included). */
function clientHello(sni: Buffer | string): Buffer {
  const name = Buffer.isBuffer(sni) ? sni : Buffer.from(sni, 'latin1');
  const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  const ext = (type: number, body: Buffer) => Buffer.concat([u16(type), u16(body.length), body]);
  const serverName = ext(0, Buffer.concat([u16(name.length + 3), Buffer.from([0]), u16(name.length), name]));
  const groups = ext(0x0a, Buffer.from([0, 4, 0x00, 0x1d, 0x00, 0x17]));
  const points = ext(0x0b, Buffer.from([1, 0]));
  const sigalgs = ext(0x0d, Buffer.from([0, 6, 0x04, 0x01, 0x08, 0x04, 0x04, 0x03]));
  const extensions = Buffer.concat([serverName, groups, points, sigalgs]);
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    Buffer.alloc(32, 0x41),
    Buffer.from([0]),
    u16(6), Buffer.from([0xc0, 0x2f, 0xc0, 0x2b, 0x00, 0x9c]),
    Buffer.from([1, 0]),
    u16(extensions.length), extensions,
  ]);
  const hs = Buffer.concat([Buffer.from([1, 0, body.length >> 8, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([22, 3, 1]), u16(hs.length), hs]);
}

/** conntrack lines of the host's own connections to addr:port (the proxy dials from the host). */
function hostConnectionsTo(addr: string, port: number): string[] {
  return readFileSync('/proc/net/nf_conntrack', 'utf8')
    .split('\n')
    .filter((l) => l.includes(` dst=${addr} `) && l.includes(` dport=${port} `) && !/src=(10|172|192)\./.test(l.split(' dst=')[0]!));
}

// ---- 1. SNI with a NUL: judged as an allowed wildcard name, resolved (truncated) as another ----------

describe('TLS SNI with a NUL byte (block-all, only *.wild.test allowed)', () => {
  before(async () => {
    await create(world, 'nul', ['--block-network', '--allow-out', '*.wild.test']);
  });

  it('control: SNI a.wild.test reaches a TLS server (a ServerHello comes back)', async () => {
    const r = await rawHex(world, 'nul', '198.18.0.4', 443, clientHello('a.wild.test'));
    assert.equal(r.reply[0], 22, `a handshake record comes back (${r.reply.toString('hex').slice(0, 20)} ${r.end})`);
  });

  it('control: SNI denied.test is reset, and denied.test is never even resolved', async () => {
    await fi.clearQueries();
    const r = await rawHex(world, 'nul', '198.18.0.4', 443, clientHello('denied.test'));
    assert.equal(r.reply.length, 0);
    assert.equal(r.end, 'reset');
    assert.ok(!(await fi.queries()).includes('denied.test'));
  });

  it('attack: SNI "denied.test\\0.wild.test" must be refused (it is judged as a subdomain of wild.test, resolved by c-ares as denied.test, and dialled)', async () => {
    await fi.clearQueries();
    const before = hostConnectionsTo('198.18.0.2', 443).length;
    const r = await rawHex(world, 'nul', '198.18.0.4', 443, clientHello(Buffer.from('denied.test\0.wild.test', 'latin1')));
    const dialled = hostConnectionsTo('198.18.0.2', 443).length - before;
    const queried = (await fi.queries()).filter((q) => q.startsWith('denied.test'));
    assert.deepEqual(
      { reply: r.reply.toString('hex'), end: r.end, dialled, queried },
      { reply: '', end: 'reset', dialled: 0, queried: [] },
      'the proxy resolved denied.test upstream and connected the sandbox to denied.test:443 (198.18.0.2)',
    );
  });
});

describe('TLS SNI with a NUL byte (allow-all, --deny-out denied.test)', () => {
  before(async () => {
    await create(world, 'nuldeny', ['--deny-out', 'denied.test']);
  });

  it('control: SNI denied.test (and TLS without SNI to its address) is reset', async () => {
    const r = await rawHex(world, 'nuldeny', '198.18.0.2', 443, clientHello('denied.test'));
    assert.deepEqual({ reply: r.reply.toString('hex'), end: r.end }, { reply: '', end: 'reset' });
  });

  it('attack: SNI "denied.test\\0" must be refused too (today: judged as another name, resolved as denied.test, dialled)', async () => {
    await fi.clearQueries();
    const before = hostConnectionsTo('198.18.0.2', 443).length;
    const r = await rawHex(world, 'nuldeny', '198.18.0.3', 443, clientHello(Buffer.from('denied.test\0', 'latin1')));
    const dialled = hostConnectionsTo('198.18.0.2', 443).length - before;
    assert.deepEqual({ reply: r.reply.toString('hex'), end: r.end, dialled }, { reply: '', end: 'reset', dialled: 0 }, 'the sandbox reached denied.test:443');
  });
});

// ---- 2. A sandbox of another SBX_HOME, through the egress proxy --------------------------------------

describe("another SBX_HOME's sandbox through the proxy (address entry naming it)", () => {
  let other: World;
  let peerIp = '';
  let samePeerIp = '';
  before(async () => {
    other = new World({ SBX_DNS_UPSTREAM: fi.dnsUpstream });
    await other.json(['create', '--name', 'peer2', '--', 'python3', '-m', 'http.server', '80']);
    peerIp = (await other.json(['inspect', 'peer2'])).ip;
    await world.json(['create', '--name', 'peer1', '--', 'python3', '-m', 'http.server', '80']);
    samePeerIp = (await world.json(['inspect', 'peer1'])).ip;
    await create(world, 'xhome', ['--deny-out', 'denied.test', '--allow-out', peerIp, '--allow-out', samePeerIp]);
  });
  after(async () => {
    await other?.cleanup();
  });

  it("control: a sandbox of the same home, even named by address, is refused by the proxy", async () => {
    const r = await http(world, 'xhome', `http://${samePeerIp}/`);
    assert.equal(r.status, 403, r.body);
    assert.match(r.body, /is a sandbox's address/);
  });

  it('control: the kernel refuses the other home\'s sandbox on a port the proxy does not carry', async () => {
    const line = await sh(world, 'xhome', `python3 /probe.py connect ${peerIp} 8081`);
    assert.match(line, /^fail (ECONNREFUSED|EHOSTUNREACH|EACCES)/);
  });

  it("attack: the other home's sandbox on port 80 (through the proxy, which dials as root past its output chain) must be refused", async () => {
    const r = await http(world, 'xhome', `http://${peerIp}/`);
    assert.equal(r.status, 403, `reached the other home's sandbox: ${r.status} ${r.body.slice(0, 80)}`);
  });
});
