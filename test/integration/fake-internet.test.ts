// The fake internet for egress tests (test/fake-internet.ts), checked from the host with real
// clients: curl for HTTP(S), hand-made DNS messages over UDP and TCP, raw UDP and TCP sockets.
// Also that it leaves nothing behind: after stop(), after SIGTERM, and after a SIGKILL.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createConnection, type Socket } from 'node:net';
import { resolve } from 'node:path';
import { FAKE_HOST6_IPS, FAKE_HOSTS, FAKE_HOSTS6, FAKE_TTL, startFakeInternet, type FakeInternet } from '../fake-internet.ts';
import { run } from '../helpers.ts';

const curl = async (...args: string[]) => {
  const r = await run('curl', ['-s', '-S', '--max-time', '5', ...args]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
};

// ---- a minimal DNS client ----

function dnsQuery(name: string, type: number, id = 0x1234): Buffer {
  // A naive split: "name." ends in an empty label, i.e. the root's zero byte, as it should.
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x0100, 2); // RD
  head.writeUInt16BE(1, 4); // one question
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(1, 2); // IN
  const qname = name.endsWith('.') ? labels : [...labels, Buffer.from([0])];
  return Buffer.concat([head, ...qname, tail]);
}

interface DnsReply {
  id: number;
  rcode: number;
  answers: { ip: string; ttl: number }[];
}

function parseReply(msg: Buffer): DnsReply {
  const an = msg.readUInt16BE(6);
  let off = 12;
  while (msg[off] !== 0) off += msg[off]! + 1; // the question's name
  off += 5; // its zero byte, type, class
  const answers = [];
  for (let i = 0; i < an; i++) {
    off += (msg[off]! & 0xc0) === 0xc0 ? 2 : assert.fail('answers use a pointer to the question');
    const [type, ttl, len] = [msg.readUInt16BE(off), msg.readUInt32BE(off + 4), msg.readUInt16BE(off + 8)];
    const rdata = msg.subarray(off + 10, off + 10 + len);
    if (type === 1) {
      assert.equal(len, 4);
      answers.push({ ip: [...rdata].join('.'), ttl });
    } else {
      assert.equal(type, 28, 'A or AAAA');
      assert.equal(len, 16);
      // The URL parser writes IPv6 hosts compressed, as Python does.
      const full = Array.from({ length: 8 }, (_, i) => rdata.readUInt16BE(2 * i).toString(16)).join(':');
      answers.push({ ip: new URL(`http://[${full}]/`).hostname.slice(1, -1), ttl });
    }
    off += 10 + len;
  }
  return { id: msg.readUInt16BE(0), rcode: msg.readUInt16BE(2) & 0xf, answers };
}

function udpExchange(host: string, port: number, payload: Buffer): Promise<Buffer> {
  return new Promise((done, fail) => {
    const s = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const timer = setTimeout(() => (s.close(), fail(new Error(`no UDP answer from ${host}:${port}`))), 3000);
    s.on('message', (m) => (clearTimeout(timer), s.close(), done(m)));
    // connect(): a reply from any other source address than the one asked would be dropped.
    s.connect(port, host, () => s.send(payload));
  });
}

const dnsUdp = async (name: string, type = 1) => parseReply(await udpExchange('198.18.0.53', 53, dnsQuery(name, type)));

/** Reads from a TCP socket until `enough` says the bytes so far are complete. */
function readUntil(sock: Socket, enough: (b: Buffer) => boolean): Promise<Buffer> {
  return new Promise((done, fail) => {
    let got = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error('TCP read timed out')), 3000);
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (enough(got)) {
        clearTimeout(timer);
        sock.off('data', onData);
        done(got);
      }
    };
    sock.on('data', onData);
  });
}

const connect = (host: string, port: number) =>
  new Promise<Socket>((done, fail) => {
    const s = createConnection({ host, port }, () => done(s));
    s.once('error', fail);
  });

async function leftovers(): Promise<string[]> {
  const found: string[] = [];
  for (const line of (await run('ip', ['netns', 'list'])).stdout.split('\n')) if (line.startsWith('sbxfi-')) found.push(`netns ${line.split(' ')[0]}`);
  for (const route of ['198.18.0.0/24', '169.254.77.1']) if ((await run('ip', ['route', 'show', route])).stdout.trim()) found.push(`route ${route}`);
  for (const line of (await run('ip', ['-6', 'route', 'show'])).stdout.split('\n')) if (line.includes('2001:2:')) found.push(`route6 ${line}`);
  for (const m of (await run('ip', ['-o', 'link', 'show'])).stdout.matchAll(/^\d+: (sbxfi\w*)/gm)) found.push(`link ${m[1]}`);
  return found;
}

describe('the fake internet', () => {
  let fi: FakeInternet;
  before(async () => {
    fi = await startFakeInternet();
  });
  after(() => fi?.stop());

  it('describes itself', () => {
    assert.match(fi.ns, /^sbxfi-[0-9a-f]+$/);
    assert.equal(fi.dnsUpstream, '198.18.0.53:53');
    assert.equal(fi.hosts, FAKE_HOSTS);
    assert.equal(fi.hosts6, FAKE_HOSTS6);
    assert.deepEqual(FAKE_HOST6_IPS, ['2001:2::1', '2001:2::2', '2001:2::3', '2001:2::4', '2001:2::5']);
  });

  it('HTTP on 80 and 8080 tells the address, port and Host header', async () => {
    assert.equal(await curl('http://198.18.0.2/', '-H', 'Host: denied.test'), '198.18.0.2 80 denied.test\n');
    assert.equal(await curl('http://198.18.0.3:8080/x?y'), '198.18.0.3 8080 198.18.0.3:8080\n');
    assert.equal(await curl('http://198.18.0.1/', '-H', 'Host:'), '198.18.0.1 80 -\n', 'no Host header');
    const head = await curl('-i', 'http://198.18.0.4/');
    assert.match(head, /^HTTP\/1\.1 200 /);
    assert.match(head, /content-type: text\/plain\r\n/i);
    assert.match(head, /content-length: 25\r\n/i);
  });

  it('HTTP over IPv6 on 80 and 8080, on every IPv6 test host', async () => {
    assert.equal(await curl('-g', 'http://[2001:2::2]/'), '2001:2::2 80 [2001:2::2]\n');
    assert.equal(await curl('-g', 'http://[2001:2::3]:8080/x'), '2001:2::3 8080 [2001:2::3]:8080\n');
    assert.equal(await curl('-g', 'http://[2001:2::1]/', '-H', 'Host: allowed.test'), '2001:2::1 80 allowed.test\n');
    for (const addr of FAKE_HOST6_IPS) assert.equal(await curl('-g', `http://[${addr}]/`), `${addr} 80 [${addr}]\n`);
  });

  it('HTTP keeps the connection alive, also after a request body', async () => {
    const out = await curl('-d', 'some body', '-w', '[%{num_connects}]', 'http://198.18.0.5/a', 'http://198.18.0.5/b', 'http://198.18.0.5/c');
    const one = '198.18.0.5 80 198.18.0.5\n';
    assert.equal(out, `${one}[1]${one}[0]${one}[0]`, 'one connection for three requests');
  });

  it('TLS on 443 tells the Host header and the SNI', async () => {
    const viaName = await curl('-k', '--resolve', 'allowed.test:443:198.18.0.1', 'https://allowed.test/');
    assert.equal(viaName, '198.18.0.1 443 allowed.test allowed.test\n');
    const wild = await curl('-k', '--resolve', 'a.wild.test:443:198.18.0.4', 'https://a.wild.test/', '-H', 'Host: other.test');
    assert.equal(wild, '198.18.0.4 443 other.test a.wild.test\n');
  });

  it('TLS without SNI works, and the certificate covers the test names', async () => {
    assert.equal(await curl('-k', 'https://198.18.0.1/'), '198.18.0.1 443 198.18.0.1 -\n');
    const cert = await run('sh', ['-c', 'openssl s_client -connect 198.18.0.1:443 -servername allowed.test </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName']);
    for (const san of ['DNS:*.test', 'DNS:*.wild.test', 'DNS:allowed.test', 'IP Address:198.18.0.1']) assert.ok(cert.stdout.includes(san), `${san} in ${cert.stdout}`);
  });

  it('TLS over IPv6, with and without SNI; the certificate covers 2001:2::1', async () => {
    assert.equal(await curl('-k', '-g', 'https://[2001:2::1]/'), '2001:2::1 443 [2001:2::1] -\n');
    const viaName = await curl('-k', '--resolve', 'allowed.test:443:[2001:2::1]', 'https://allowed.test/');
    assert.equal(viaName, '2001:2::1 443 allowed.test allowed.test\n');
    const cert = await run('sh', ['-c', 'openssl s_client -connect [2001:2::1]:443 </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName']);
    assert.match(cert.stdout, /IP Address:2001:2(:0)*:1\b/, cert.stdout);
  });

  it('the link-local "metadata" address serves HTTP on 80', async () => {
    assert.equal(await curl('http://169.254.77.1/latest/meta-data/'), '169.254.77.1 80 169.254.77.1\n');
  });

  it('DNS over UDP answers A records from the table, TTL 60', async () => {
    for (const [name, ips] of Object.entries(FAKE_HOSTS)) {
      const r = await dnsUdp(name);
      assert.equal(r.rcode, 0, name);
      assert.deepEqual(r.answers.map((a) => a.ip), ips, name);
      for (const a of r.answers) assert.equal(a.ttl, name === 'ttl5.test' ? 5 : FAKE_TTL, name);
    }
    const reply = await udpExchange('198.18.0.53', 53, dnsQuery('allowed.test', 1, 0xbeef));
    assert.equal(parseReply(reply).id, 0xbeef);
    assert.equal(reply.readUInt16BE(2) & 0x8000, 0x8000, 'QR set');
  });

  it('DNS over UDP answers AAAA records from the IPv6 table, TTL 60', async () => {
    for (const [name, ips] of Object.entries(FAKE_HOSTS6)) {
      const r = await dnsUdp(name, 28);
      assert.equal(r.rcode, 0, name);
      assert.deepEqual(r.answers, ips.map((ip) => ({ ip, ttl: FAKE_TTL })), name);
    }
    assert.deepEqual((await dnsUdp('Other.TEST.', 28)).answers.map((a) => a.ip), ['2001:2::3']);
    // Names in one table only: NOERROR without records for the other type.
    for (const [name, type] of [['v6only.test', 1], ['multi.test', 28], ['meta.test', 28]] as const) {
      const r = await dnsUdp(name, type);
      assert.equal(r.rcode, 0, name);
      assert.deepEqual(r.answers, [], name);
    }
    const mx = await dnsUdp('v6only.test', 15);
    assert.equal(mx.rcode, 0);
    assert.deepEqual(mx.answers, []);
  });

  it('DNS is case-insensitive and ignores a trailing dot', async () => {
    assert.deepEqual((await dnsUdp('ALLOWED.Test')).answers.map((a) => a.ip), ['198.18.0.1']);
    assert.deepEqual((await dnsUdp('Deep.X.Wild.TEST.')).answers.map((a) => a.ip), ['198.18.0.4']);
  });

  it('DNS: NXDOMAIN for unknown names, NOERROR without records for AAAA of known ones', async () => {
    for (const name of ['nope.test', 'x.allowed.test', 'c.wild.test', 'example.com']) {
      const r = await dnsUdp(name);
      assert.equal(r.rcode, 3, name);
      assert.deepEqual(r.answers, [], name);
    }
    const aaaa = await dnsUdp('wild.test', 28);
    assert.equal(aaaa.rcode, 0);
    assert.deepEqual(aaaa.answers, []);
    assert.equal((await dnsUdp('nope.test', 28)).rcode, 3);
  });

  it('DNS over TCP, two queries on one connection', async () => {
    const s = await connect('198.18.0.53', 53);
    try {
      for (const [name, want] of [['multi.test', ['198.18.0.3', '198.18.0.5']], ['meta.test', ['169.254.77.1']]] as const) {
        const q = dnsQuery(name, 1);
        const len = Buffer.alloc(2);
        len.writeUInt16BE(q.length);
        s.write(Buffer.concat([len, q]));
        const framed = await readUntil(s, (b) => b.length >= 2 && b.length >= 2 + b.readUInt16BE(0));
        const r = parseReply(framed.subarray(2));
        assert.equal(r.rcode, 0);
        assert.deepEqual(r.answers.map((a) => a.ip), want);
      }
    } finally {
      s.destroy();
    }
  });

  it('queries() lists the names asked (lower case); clearQueries() empties it', async () => {
    await fi.clearQueries();
    assert.deepEqual(await fi.queries(), []);
    await dnsUdp('Never.Reached.test');
    await dnsUdp('other.test', 28);
    assert.deepEqual(await fi.queries(), ['never.reached.test', 'other.test']);
  });

  it('UDP echo on 9999 answers from the address asked, with it', async () => {
    for (const addr of ['198.18.0.1', '198.18.0.4', '169.254.77.1']) {
      assert.equal(String(await udpExchange(addr, 9999, Buffer.from('ping 1'))), `${addr} ping 1`);
    }
  });

  it('UDP echo on 9999 over IPv6 answers from the address asked, with it', async () => {
    for (const addr of FAKE_HOST6_IPS) {
      assert.equal(String(await udpExchange(addr, 9999, Buffer.from('ping 6'))), `${addr} ping 6`);
    }
    // And from python3 (AF_INET6), a client of its own.
    const py = await run('python3', ['-c', `
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect(("2001:2::5", 9999))
s.send(b"hi")
print(s.recv(100).decode())
`]);
    assert.equal(py.stdout, '2001:2::5 hi\n', py.stderr);
  });

  it('the hold port greets, then echoes lines for as long as the connection lives', async () => {
    const s = await connect('198.18.0.3', 7000);
    try {
      const line = (b: Buffer) => b.includes(10);
      assert.equal(String(await readUntil(s, line)), 'hello\n');
      s.write('one\n');
      assert.equal(String(await readUntil(s, line)), 'one\n');
      await new Promise((r) => setTimeout(r, 300));
      s.write('two\n');
      assert.equal(String(await readUntil(s, line)), 'two\n');
    } finally {
      s.destroy();
    }
  });

  it('the hold port over IPv6', async () => {
    const s = await connect('2001:2::4', 7000);
    try {
      const line = (b: Buffer) => b.includes(10);
      assert.equal(String(await readUntil(s, line)), 'hello\n');
      s.write('six\n');
      assert.equal(String(await readUntil(s, line)), 'six\n');
    } finally {
      s.destroy();
    }
  });

  it('stop() removes namespace, veth and routes (IPv4 and IPv6), and may be called twice', async () => {
    const before = await leftovers();
    assert.ok(before.some((l) => l.startsWith('route6 2001:2::/48 via fd5c::2')), `the IPv6 route is there before: ${before}`);
    await fi.stop();
    await fi.stop();
    assert.deepEqual(await leftovers(), []);
    // (No request to 198.18.0.x or 2001:2:: now: without the routes it would leave through the default route.)
  });
});

describe('the fake internet when its test process dies', () => {
  const module = resolve(import.meta.dirname, '..', 'fake-internet.ts');
  // A test process that starts a fake internet, says so, and waits to be killed.
  const startInChild = async () => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', `
      const { startFakeInternet } = await import(${JSON.stringify(module)});
      await startFakeInternet();
      console.log('up');
      setInterval(() => {}, 1000);
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((up, fail) => {
      child.stdout.on('data', (d) => String(d).includes('up') && up());
      child.once('exit', (code) => fail(new Error(`child exited ${code}`)));
    });
    assert.ok((await leftovers()).length > 0);
    return child;
  };

  it('SIGTERM: its handler cleans up', async () => {
    const child = await startInChild();
    const exited = new Promise((r) => child.once('exit', (_code, sig) => r(sig)));
    child.kill('SIGTERM');
    assert.equal(await exited, 'SIGTERM', 'it still dies of the signal');
    assert.deepEqual(await leftovers(), []);
  });

  it('SIGKILL: the next start removes what was left, and works', async () => {
    const child = await startInChild();
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    assert.ok((await leftovers()).some((l) => l.startsWith('netns')), 'a stale namespace');
    const fi = await startFakeInternet();
    try {
      assert.deepEqual((await leftovers()).filter((l) => l.startsWith('netns')), [`netns ${fi.ns}`]);
      assert.equal(await curl('http://198.18.0.1/'), '198.18.0.1 80 198.18.0.1\n');
      assert.equal(await curl('-g', 'http://[2001:2::1]/'), '2001:2::1 80 [2001:2::1]\n');
    } finally {
      await fi.stop();
    }
    assert.deepEqual(await leftovers(), []);
  });
});
