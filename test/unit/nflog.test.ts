// The NFLOG reader (nflog.ts): the parser on hand-built datagrams, then the kernel itself in a
// scratch network namespace of the test's own (nft `log group` rules, packets on lo).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { endianness } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseNflogDatagram } from '../../src/net/nflog.ts';

// --- Builders: netlink lengths and types in host order, packet fields in network order.
const LE = endianness() === 'LE';
const u16h = (v: number) => {
  const b = Buffer.alloc(2);
  LE ? b.writeUInt16LE(v) : b.writeUInt16BE(v);
  return b;
};
const u32h = (v: number) => {
  const b = Buffer.alloc(4);
  LE ? b.writeUInt32LE(v) : b.writeUInt32BE(v);
  return b;
};
const be16 = (v: number) => Buffer.from([v >> 8, v & 0xff]);
const be32 = (v: number) => Buffer.from([v >>> 24, (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff]);
const pad4 = (b: Buffer) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
/** An attribute; `len` overrides the length field (a lying, truncated attribute). */
const nla = (type: number, value: Buffer, len = 4 + value.length) => pad4(Buffer.concat([u16h(len), u16h(type), value]));
const nlmsg = (type: number, body: Buffer) => pad4(Buffer.concat([u32h(16 + body.length), u16h(type), u16h(0), u32h(0), u32h(0), body]));
const PACKET = (4 << 8) | 0;
const packetMsg = (family: number, attrs: Buffer[]) => nlmsg(PACKET, Buffer.concat([Buffer.from([family, 0]), be16(4242), ...attrs]));
const hdr = (hook: number, hw: number) => nla(1, Buffer.concat([be16(hw), Buffer.from([hook, 0])]));
const prefix = (text: string) => nla(10, Buffer.from(`${text}\0`));
const payload = (p: Buffer) => nla(9, p);

function ipv4(proto: number, l4: Buffer, src = [10, 0, 0, 2], dst = [93, 184, 216, 34]): Buffer {
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + l4.length, 2);
  h[8] = 64;
  h[9] = proto;
  Buffer.from(src).copy(h, 12);
  Buffer.from(dst).copy(h, 16);
  return Buffer.concat([h, l4]);
}
function ipv6(next: number, rest: Buffer, src: string, dst: string): Buffer {
  const h = Buffer.alloc(40);
  h[0] = 0x60;
  h.writeUInt16BE(rest.length, 4);
  h[6] = next;
  h[7] = 64;
  const bytes = (a: string) => Buffer.from(a.split(':').map((g) => g.padStart(4, '0')).join(''), 'hex');
  bytes(src).copy(h, 8);
  bytes(dst).copy(h, 24);
  return Buffer.concat([h, rest]);
}
const ports = (s: number, d: number, length = 20) => Buffer.concat([be16(s), be16(d), Buffer.alloc(length - 4)]);

describe('parseNflogDatagram', () => {
  it('an IPv4 TCP packet: prefix, hook, addresses, ports, kernel time and input interface', () => {
    const ts = Buffer.alloc(16);
    ts.writeBigUInt64BE(1_700_000_000n, 0);
    ts.writeBigUInt64BE(250_000n, 8);
    const dgram = packetMsg(2, [hdr(2, 0x0800), nla(3, ts), nla(4, be32(7)), prefix('sbx:abc:d'), payload(ipv4(6, ports(40000, 443)))]);
    const [p, ...rest] = parseNflogDatagram(dgram);
    assert.equal(rest.length, 0);
    assert.deepEqual(p, {
      prefix: 'sbx:abc:d',
      hook: 2,
      family: 4,
      protocol: 'tcp',
      source: '10.0.0.2',
      destination: '93.184.216.34',
      sourcePort: 40000,
      destinationPort: 443,
      time: new Date(1_700_000_000_250),
      inIfindex: 7,
    });
  });

  it('an IPv4 UDP packet without a timestamp is stamped with the time it was read', () => {
    const before = Date.now();
    const [p] = parseNflogDatagram(packetMsg(2, [hdr(3, 0x0800), prefix('sbx:u'), payload(ipv4(17, ports(5353, 53, 8)))]));
    assert.ok(p);
    assert.equal(p.protocol, 'udp');
    assert.equal(p.sourcePort, 5353);
    assert.equal(p.destinationPort, 53);
    assert.equal(p.inIfindex, undefined);
    assert.ok(p.time.getTime() >= before && p.time.getTime() <= Date.now());
  });

  it('an IPv6 TCP packet behind a hop-by-hop and a destination options header; compressed addresses', () => {
    // Hop-by-hop (8 bytes, next: dst options), dst options (16 bytes, next: TCP).
    const hbh = Buffer.concat([Buffer.from([60, 0]), Buffer.alloc(6)]);
    const dstopts = Buffer.concat([Buffer.from([6, 1]), Buffer.alloc(14)]);
    const p6 = ipv6(0, Buffer.concat([hbh, dstopts, ports(51000, 8443)]), 'fd00:0000:0000:0000:0000:0000:0000:0002', '2001:0db8:0000:0001:0000:0000:0000:0001');
    const [p] = parseNflogDatagram(packetMsg(10, [hdr(2, 0x86dd), prefix('sbx:v6'), payload(p6)]));
    assert.ok(p);
    assert.equal(p.family, 6);
    assert.equal(p.protocol, 'tcp');
    assert.equal(p.source, 'fd00::2');
    assert.equal(p.destination, '2001:db8:0:1::1');
    assert.equal(p.sourcePort, 51000);
    assert.equal(p.destinationPort, 8443);
    // A non-first fragment: the protocol behind it, but no ports.
    const frag = Buffer.concat([Buffer.from([17, 0]), be16(185 << 3), Buffer.alloc(4)]);
    const [f] = parseNflogDatagram(packetMsg(10, [hdr(2, 0x86dd), payload(ipv6(44, Buffer.concat([frag, ports(1, 2, 8)]), '0:0:0:0:0:0:0:1', '0:0:0:0:0:ffff:7f00:1'))]));
    assert.equal(f?.protocol, 'udp');
    assert.equal(f?.sourcePort, undefined);
    assert.equal(f?.destination, '::ffff:127.0.0.1');
    assert.equal(f?.prefix, '', 'no prefix attribute');
  });

  it('ICMP and other protocols: no ports, the name or the number', () => {
    const [icmp] = parseNflogDatagram(packetMsg(2, [hdr(3, 0x0800), payload(ipv4(1, Buffer.from([8, 0, 0, 0, 0, 1, 0, 1])))]));
    assert.equal(icmp?.protocol, 'icmp');
    assert.equal(icmp?.sourcePort, undefined);
    const [sctp] = parseNflogDatagram(packetMsg(2, [hdr(3, 0x0800), payload(ipv4(132, ports(1, 2, 12)))]));
    assert.equal(sctp?.protocol, '132');
    assert.equal(sctp?.destinationPort, undefined);
    const [icmp6] = parseNflogDatagram(packetMsg(10, [hdr(3, 0x86dd), payload(ipv6(58, Buffer.from([128, 0, 0, 0]), '0:0:0:0:0:0:0:1', '0:0:0:0:0:0:0:1'))]));
    assert.equal(icmp6?.protocol, 'icmpv6');
  });

  it('a truncated attribute: what came before it is kept; a packet without its payload is skipped', () => {
    const good = payload(ipv4(17, ports(1000, 2000, 8)));
    const lying = nla(16, Buffer.alloc(4), 200); // says 200 bytes, has 4
    const [p, ...rest] = parseNflogDatagram(packetMsg(2, [hdr(3, 0x0800), prefix('sbx:t'), good, lying]));
    assert.equal(rest.length, 0);
    assert.equal(p?.destinationPort, 2000);
    assert.deepEqual(parseNflogDatagram(packetMsg(2, [hdr(3, 0x0800), prefix('sbx:t'), nla(9, ipv4(17, ports(1, 2, 8)), 500)])), []);
    // Payloads too short for an IP header, a bad version, a message longer than the datagram, garbage.
    assert.deepEqual(parseNflogDatagram(packetMsg(2, [hdr(3, 0x0800), payload(Buffer.from([0x45, 0, 0]))])), []);
    assert.deepEqual(parseNflogDatagram(packetMsg(2, [hdr(3, 0x0800), payload(Buffer.alloc(40, 0x70))])), []);
    assert.deepEqual(parseNflogDatagram(packetMsg(2, [hdr(3, 0x0800), payload(ipv4(6, ports(1, 2)))]).subarray(0, 40)), []);
    for (let i = 0; i < 200; i++) parseNflogDatagram(Buffer.from(Array.from({ length: i }, (_, j) => (j * 37 + i) & 0xff)));
  });

  it('two messages in one datagram, and a message that is not a packet between them', () => {
    const a = packetMsg(2, [hdr(3, 0x0800), prefix('sbx:one'), payload(ipv4(17, ports(1, 53, 8)))]);
    const other = nlmsg(2, Buffer.alloc(20)); // an NLMSG_ERROR
    const b = packetMsg(10, [hdr(3, 0x86dd), prefix('sbx:two'), payload(ipv6(6, ports(2, 443), '0:0:0:0:0:0:0:1', '0:0:0:0:0:0:0:1'))]);
    const packets = parseNflogDatagram(Buffer.concat([a, other, b]));
    assert.deepEqual(packets.map((p) => [p.prefix, p.family, p.protocol, p.destinationPort]), [
      ['sbx:one', 4, 'udp', 53],
      ['sbx:two', 6, 'tcp', 443],
    ]);
  });
});

// --- The kernel round trip.
const root = process.getuid?.() === 0;
let koffi = true;
try {
  createRequire(import.meta.url)('koffi');
} catch {
  koffi = false;
}
const skip = !root ? 'needs root (a network namespace, nft)' : !koffi ? 'koffi cannot load' : false;
const netns = `sbxnflogtest-${process.pid}`;
const nflogModule = fileURLToPath(new URL('../../src/net/nflog.ts', import.meta.url));
const GROUP = 4242;

/** Runs `code` (an ES module body) in a node whose network namespace is the scratch one; its stdout's JSON lines. */
function inNetns(code: string): Record<string, unknown>[] {
  const r = spawnSync('nsenter', [`--net=/var/run/netns/${netns}`, process.execPath, '--input-type=module', '-e', code], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(r.status, 0, `child failed: ${r.stderr}`);
  return r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('openNflog in a scratch network namespace', { skip }, () => {
  before(() => {
    const rules = `table inet t {
  chain out { type filter hook output priority 0; udp dport 9999 log prefix "sbx:test:a" group ${GROUP}; tcp dport 9998 log prefix "sbx:test:r" group ${GROUP}; }
  chain in { type filter hook input priority 0; udp dport 9999 log prefix "sbx:test:in" group ${GROUP}; }
}
`;
    const steps: [string[], string?][] = [[['ip', 'netns', 'add', netns]], [['ip', '-n', netns, 'link', 'set', 'lo', 'up']], [['nsenter', `--net=/var/run/netns/${netns}`, 'nft', '-f', '-'], rules]];
    for (const [argv, input] of steps) {
      const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', input });
      assert.equal(r.status, 0, `${argv.join(' ')}: ${r.stderr}`);
    }
  });
  after(() => {
    spawnSync('ip', ['netns', 'del', netns]);
  });

  it('reads UDP and TCP over IPv4 and IPv6, refuses a second bind of the group, and close() frees it within 1.5 s', () => {
    const lines = inNetns(`import { openNflog } from ${JSON.stringify(nflogModule)};
import dgram from 'node:dgram';
import net from 'node:net';
const say = (o) => process.stdout.write(JSON.stringify(o) + '\\n');
const packets = [];
const reader = await openNflog(${GROUP}, (p) => packets.push(p), (err) => say({ error: err.message }));
if ('why' in reader) { say({ why1: reader.why }); process.exit(0); }
const second = await openNflog(${GROUP}, () => {});
say({ second });
const udp = (type, host) => new Promise((res) => { const s = dgram.createSocket(type); s.send('x', 9999, host, () => { s.close(); res(); }); });
const tcp = (host) => new Promise((res) => net.connect(9998, host).on('error', res).on('connect', res));
await udp('udp4', '127.0.0.1'); await udp('udp6', '::1'); await tcp('127.0.0.1'); await tcp('::1');
for (let i = 0; i < 50 && packets.length < 6; i++) await new Promise((res) => setTimeout(res, 100));
for (const p of packets) say({ packet: p });
reader.close();
const closed = Date.now();
let again;
while (Date.now() - closed < 3000) {
  again = await openNflog(${GROUP}, () => {});
  if (!('why' in again)) break;
  await new Promise((res) => setTimeout(res, 50));
}
say({ rebound: !('why' in again), after: Date.now() - closed, dropped: reader.dropped });
if (!('why' in again)) again.close();
`);
    const out = Object.assign({}, ...lines.filter((l) => !('packet' in l))) as Record<string, any>;
    assert.equal(out.why1, undefined, String(out.why1));
    assert.equal(out.error, undefined);
    assert.match(String(out.second?.why), new RegExp(`group ${GROUP}.*EPERM`));
    const packets = lines.filter((l) => 'packet' in l).map((l) => l.packet as Record<string, unknown>);
    const find = (prefix: string, family: number) => packets.find((p) => p.prefix === prefix && p.family === family);
    for (const family of [4, 6]) {
      const loopback = family === 4 ? '127.0.0.1' : '::1';
      const udp = find('sbx:test:a', family);
      assert.ok(udp, `a UDP packet over IPv${family}: ${JSON.stringify(packets)}`);
      assert.equal(udp.hook, 3);
      assert.equal(udp.protocol, 'udp');
      assert.equal(udp.destinationPort, 9999);
      assert.equal(typeof udp.sourcePort, 'number');
      assert.equal(udp.source, loopback);
      assert.equal(udp.destination, loopback);
      assert.equal(udp.inIfindex, undefined, 'output has no input interface');
      const tcp = find('sbx:test:r', family);
      assert.ok(tcp, `a TCP SYN over IPv${family}`);
      assert.equal(tcp.hook, 3);
      assert.equal(tcp.protocol, 'tcp');
      assert.equal(tcp.destinationPort, 9998);
      assert.equal(tcp.destination, loopback);
      // The same datagram on its way in: hook input, from lo (ifindex 1), with the kernel's time.
      const input = find('sbx:test:in', family);
      assert.ok(input, `the UDP packet at input over IPv${family}`);
      assert.equal(input.hook, 1);
      assert.equal(input.inIfindex, 1);
      assert.ok(Math.abs(Date.parse(String(input.time)) - Date.now()) < 60_000);
    }
    assert.equal(out.rebound, true, 'the group is free once the reader has closed its socket');
    assert.ok(out.after < 1500, `closed after ${out.after} ms`);
    assert.equal(out.dropped, 0);
  });
});
