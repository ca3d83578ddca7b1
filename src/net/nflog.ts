// The kernel's NFLOG messages (nfnetlink_log) for one group, read in this process through koffi:
// what nft's `log group N` rules saw, without a ulogd or a tcpdump process. Used by the gateway
// (root); anything that cannot load koffi or libc gets a reason and goes without.
import { firstLine, requireKoffi, type KoffiFn } from './koffi.ts';
import { SocketAddress } from 'node:net';
import { endianness } from 'node:os';
import { getSystemErrorName } from 'node:util';

export interface NflogPacket {
  /** The rule's log prefix (NFULA_PREFIX), without the trailing NUL. */
  prefix: string;
  /** Netfilter hook number from NFULA_PACKET_HDR (1 = input, 2 = forward, 3 = output...). */
  hook: number;
  family: 4 | 6;
  /** 'tcp' | 'udp' | 'icmp' | 'icmpv6' or the protocol number as a string. */
  protocol: string;
  source: string;
  destination: string;
  sourcePort?: number;
  destinationPort?: number;
  /** NFULA_TIMESTAMP when the kernel gave one, else the time it was read. */
  time: Date;
  /** NFULA_IFINDEX_INDEV when present. */
  inIfindex?: number;
}

export interface NflogReader {
  readonly group: number;
  /** Times the kernel said it dropped messages for this socket (ENOBUFS: the socket's buffer was full). */
  readonly dropped: number;
  /** Ends the reading loop (within one receive timeout, about 500 ms), then closes the socket. */
  close(): void;
}


const AF_NETLINK = 16;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_NETFILTER = 12;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;
// Linux errno values (koffi hands back the raw number).
const EPERM = 1;
const EINTR = 4;
const EAGAIN = 11; // = EWOULDBLOCK
const ENOBUFS = 105;

const NLMSG_HDRLEN = 16;
const NLMSG_ERROR = 2;
const NLM_F_REQUEST = 1;
const NLM_F_ACK = 4;
const NFNL_SUBSYS_ULOG = 4;
const NFULNL_MSG_PACKET = (NFNL_SUBSYS_ULOG << 8) | 0;
const NFULNL_MSG_CONFIG = (NFNL_SUBSYS_ULOG << 8) | 1;
// Config attributes and values (linux/netfilter/nfnetlink_log.h).
const NFULA_CFG_CMD = 1;
const NFULA_CFG_MODE = 2;
const NFULA_CFG_QTHRESH = 5; // 3 is NLBUFSIZ, 4 TIMEOUT
const NFULNL_CFG_CMD_BIND = 1;
const NFULNL_COPY_PACKET = 2;
/** Enough of a packet for the IP header, IPv6 extension headers and the ports. */
const COPY_RANGE = 128;
// Packet attributes.
const NFULA_PACKET_HDR = 1;
const NFULA_TIMESTAMP = 3;
const NFULA_IFINDEX_INDEV = 4;
const NFULA_PAYLOAD = 9;
const NFULA_PREFIX = 10;
/** Off an attribute's type: NLA_F_NESTED and NLA_F_NET_BYTEORDER. */
const NLA_TYPE_MASK = 0x3fff;

const PROTOCOLS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp', 58: 'icmpv6' };
/** IPv6 extension headers skipped on the way to the ports: hop-by-hop, routing, destination options (fragment apart). */
const IPV6_EXTENSIONS = new Set([0, 43, 60]);
const IPV6_FRAGMENT = 44;

// Netlink headers and attribute lengths are in the host's byte order.
const LE = endianness() === 'LE';
const u16 = (b: Buffer, o: number) => (LE ? b.readUInt16LE(o) : b.readUInt16BE(o));
const u32 = (b: Buffer, o: number) => (LE ? b.readUInt32LE(o) : b.readUInt32BE(o));
const put16 = (b: Buffer, v: number, o: number) => (LE ? b.writeUInt16LE(v, o) : b.writeUInt16BE(v, o));
const put32 = (b: Buffer, v: number, o: number) => (LE ? b.writeUInt32LE(v, o) : b.writeUInt32BE(v, o));
const align4 = (n: number) => (n + 3) & ~3;

/** Pure: every NFULNL_MSG_PACKET in one datagram read from the socket (malformed parts skipped, never throws). */
export function parseNflogDatagram(buf: Buffer): NflogPacket[] {
  const packets: NflogPacket[] = [];
  for (const { type, body } of messages(buf)) {
    if (type !== NFULNL_MSG_PACKET) continue;
    try {
      const packet = parsePacket(body);
      if (packet) packets.push(packet);
    } catch {
      // Bounds are checked below; this only keeps the promise that one bad message costs itself.
    }
  }
  return packets;
}

/** The netlink messages of a datagram (type, sequence number, what follows the header); stops at the first bad length. */
function* messages(buf: Buffer): Generator<{ type: number; seq: number; body: Buffer }> {
  for (let off = 0; off + NLMSG_HDRLEN <= buf.length; ) {
    const len = u32(buf, off);
    if (len < NLMSG_HDRLEN || off + len > buf.length) return;
    yield { type: u16(buf, off + 4), seq: u32(buf, off + 8), body: buf.subarray(off + NLMSG_HDRLEN, off + len) };
    off += align4(len);
  }
}

/** One packet message: nfgenmsg (4 bytes), then attributes. Undefined without an IP payload to name both ends. */
function parsePacket(body: Buffer): NflogPacket | undefined {
  let prefix = '';
  let hook = -1;
  let time: Date | undefined;
  let inIfindex: number | undefined;
  let payload: Buffer | undefined;
  for (let off = 4; off + 4 <= body.length; ) {
    const len = u16(body, off);
    // A truncated or zero-length attribute ends the message's attributes: nothing after it can be found.
    if (len < 4 || off + len > body.length) break;
    const value = body.subarray(off + 4, off + len);
    switch (u16(body, off + 2) & NLA_TYPE_MASK) {
      case NFULA_PACKET_HDR:
        if (value.length >= 3) hook = value[2]!;
        break;
      case NFULA_TIMESTAMP:
        if (value.length >= 16) time = new Date(Number(value.readBigUInt64BE(0)) * 1000 + Number(value.readBigUInt64BE(8)) / 1000);
        break;
      case NFULA_IFINDEX_INDEV:
        if (value.length >= 4) inIfindex = value.readUInt32BE(0);
        break;
      case NFULA_PAYLOAD:
        payload = value;
        break;
      case NFULA_PREFIX: {
        const nul = value.indexOf(0);
        prefix = value.toString('utf8', 0, nul < 0 ? value.length : nul);
        break;
      }
    }
    off += align4(len);
  }
  const ip = payload && parseIp(payload);
  if (!ip || hook < 0) return undefined;
  return { prefix, hook, ...ip, time: time ?? new Date(), ...(inIfindex !== undefined && { inIfindex }) };
}

type IpPart = Pick<NflogPacket, 'family' | 'protocol' | 'source' | 'destination' | 'sourcePort' | 'destinationPort'>;

/** Addresses, protocol and (TCP, UDP) ports of an L3 packet, as far as the copied bytes go. */
function parseIp(p: Buffer): IpPart | undefined {
  const version = p.length > 0 ? p[0]! >> 4 : 0;
  let proto: number;
  let l4: number | undefined; // where the TCP/UDP header starts; undefined when not reachable
  let part: Omit<IpPart, 'protocol'>;
  if (version === 4) {
    const ihl = (p[0]! & 0x0f) * 4;
    if (p.length < 20 || ihl < 20) return undefined;
    proto = p[9]!;
    // A fragment past the first has no ports.
    if ((p.readUInt16BE(6) & 0x1fff) === 0) l4 = ihl;
    part = { family: 4, source: p.subarray(12, 16).join('.'), destination: p.subarray(16, 20).join('.') };
  } else if (version === 6) {
    if (p.length < 40) return undefined;
    proto = p[6]!;
    let off = 40;
    let first = true;
    while (off + 8 <= p.length && (IPV6_EXTENSIONS.has(proto) || proto === IPV6_FRAGMENT)) {
      if (proto === IPV6_FRAGMENT) {
        first &&= (p.readUInt16BE(off + 2) >> 3) === 0;
        proto = p[off]!;
        off += 8;
      } else {
        const next = p[off]!;
        off += (p[off + 1]! + 1) * 8;
        proto = next;
      }
    }
    // Still on an extension header (cut off by the copy range): its number is all there is to say.
    if (first && !IPV6_EXTENSIONS.has(proto) && proto !== IPV6_FRAGMENT) l4 = off;
    part = { family: 6, source: ipv6(p.subarray(8, 24)), destination: ipv6(p.subarray(24, 40)) };
  } else {
    return undefined;
  }
  const protocol = PROTOCOLS[proto] ?? String(proto);
  if ((proto === 6 || proto === 17) && l4 !== undefined && l4 + 4 <= p.length) {
    return { ...part, protocol, sourcePort: p.readUInt16BE(l4), destinationPort: p.readUInt16BE(l4 + 2) };
  }
  return { ...part, protocol };
}

/** 16 bytes as node writes an IPv6 address (compressed, ::ffff:a.b.c.d for mapped IPv4). */
function ipv6(b: Buffer): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(b.readUInt16BE(i).toString(16));
  return new SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
}

/** One netlink attribute, padded to 4 bytes. */
function attr(type: number, value: Buffer): Buffer {
  const out = Buffer.alloc(align4(4 + value.length));
  put16(out, 4 + value.length, 0);
  put16(out, type, 2);
  value.copy(out, 4);
  return out;
}

/** The bind request: one config message (the kernel applies the mode and threshold to the instance the command made). */
function bindMessage(group: number, seq: number): Buffer {
  const mode = Buffer.alloc(6); // { be32 copy_range; u8 copy_mode; u8 pad }, packed
  mode.writeUInt32BE(COPY_RANGE, 0);
  mode[4] = NFULNL_COPY_PACKET;
  const qthresh = Buffer.alloc(4);
  qthresh.writeUInt32BE(1, 0); // each packet is sent at once, not after 100 of them or a second
  const nfgen = Buffer.from([0 /* AF_UNSPEC */, 0 /* NFNETLINK_V0 */, group >> 8, group & 0xff]);
  const body = Buffer.concat([nfgen, attr(NFULA_CFG_CMD, Buffer.from([NFULNL_CFG_CMD_BIND])), attr(NFULA_CFG_MODE, mode), attr(NFULA_CFG_QTHRESH, qthresh)]);
  const hdr = Buffer.alloc(NLMSG_HDRLEN);
  put32(hdr, NLMSG_HDRLEN + body.length, 0);
  put16(hdr, NFULNL_MSG_CONFIG, 4);
  put16(hdr, NLM_F_REQUEST | NLM_F_ACK, 6);
  put32(hdr, seq, 8); // the port id (bytes 12-15) stays 0: the kernel's
  return Buffer.concat([hdr, body]);
}

/** The ack's error (0, or a negative errno) for request `seq` in a datagram, if it holds the ack. */
function ackOf(buf: Buffer, seq: number): number | undefined {
  for (const m of messages(buf)) {
    if (m.type === NLMSG_ERROR && m.seq === seq && m.body.length >= 4) return LE ? m.body.readInt32LE(0) : m.body.readInt32BE(0);
  }
  return undefined;
}

/**
 * Binds `group` on a netlink socket of its own (close-on-exec: the gateway's children must not
 * hold it) and calls onPacket for each packet logged to it. Resolves `{ why }` when koffi or libc
 * cannot load, or the kernel refuses the bind (the group is another socket's, in this network
 * namespace). Receives run on libuv's thread pool (koffi's .async), so the JS thread never waits.
 */
export async function openNflog(group: number, onPacket: (p: NflogPacket) => void, onError?: (err: Error) => void): Promise<NflogReader | { why: string }> {
  if (!Number.isInteger(group) || group < 0 || group > 0xffff) return { why: `nflog group ${group} is not a number from 0 to 65535` };
  const koffi = requireKoffi();
  if ('why' in koffi) return { why: koffi.why };
  let socket: KoffiFn, setsockopt: KoffiFn, send: KoffiFn, recv: KoffiFn, close: KoffiFn;
  try {
    const libc = koffi.load('libc.so.6');
    socket = libc.func('int socket(int domain, int type, int protocol)');
    setsockopt = libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t len)');
    send = libc.func('intptr_t send(int fd, const void *buf, size_t len, int flags)');
    recv = libc.func('intptr_t recv(int fd, void *buf, size_t len, int flags)');
    close = libc.func('int close(int fd)');
  } catch (err) {
    return { why: `libc.so.6 could not be used through koffi (${firstLine(err)})` };
  }
  const errnoName = (errno: number) => (errno > 0 ? getSystemErrorName(-errno) : `errno ${errno}`);

  const fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER) as number;
  if (fd < 0) return { why: `nflog group ${group}: no netlink socket (${errnoName(koffi.errno())})` };
  const fail = (why: string) => {
    close(fd);
    return { why: `nflog group ${group}: ${why}` };
  };
  // A receive returns at least every 500 ms, so that close() is seen without a packet to wake it.
  const long = koffi.sizeof('long');
  const timeout = Buffer.alloc(2 * long); // struct timeval { long tv_sec; long tv_usec; }: 0 s and 500,000 us
  put32(timeout, 500_000, long + (LE || long === 4 ? 0 : 4));
  if ((setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout, timeout.length) as number) !== 0) return fail(`could not set a receive timeout (${errnoName(koffi.errno())})`);

  const buf = Buffer.alloc(65536);
  const receive = () =>
    new Promise<{ n: number; errno: number; failed?: string }>((resolve) => {
      recv.async(fd, buf, buf.length, 0, (err: unknown, n: number) => {
        // errno is the receiving thread's, handed over by koffi for this callback only.
        if (err) resolve({ n: -1, errno: 0, failed: firstLine(err) });
        else resolve({ n, errno: n < 0 ? koffi.errno() : 0 });
      });
    });

  let dropped = 0;
  const seq = (Date.now() & 0x7fffffff) >>> 0;
  const request = bindMessage(group, seq);
  if ((send(fd, request, request.length, 0) as number) !== request.length) return fail(`could not send the bind request (${errnoName(koffi.errno())})`);
  // The kernel answers while the send runs; packets logged right after the bind may come first: kept for onPacket.
  const early: NflogPacket[] = [];
  for (let waits = 0; ; ) {
    const r = await receive();
    if (r.failed) return fail(`receive failed (${r.failed})`);
    if (r.n < 0) {
      if (r.errno === ENOBUFS) dropped++;
      else if (r.errno !== EAGAIN && r.errno !== EINTR) return fail(`receive failed (${errnoName(r.errno)})`);
      else if (++waits >= 4) return fail('the kernel did not answer the bind request');
      continue;
    }
    const data = buf.subarray(0, r.n);
    const error = ackOf(data, seq);
    early.push(...parseNflogDatagram(data));
    if (error === undefined) continue;
    if (error === 0) break;
    // EPERM is what a second socket gets for a bound group (EBUSY only when the same socket binds twice).
    if (error === -EPERM) return fail('the kernel refused the bind (EPERM): another netlink socket in this network namespace has bound the group, or this process lacks CAP_NET_ADMIN');
    return fail(`the kernel refused the bind (${errnoName(-error)})`);
  }

  let closed = false;
  const deliver = (packets: NflogPacket[]) => {
    for (const p of packets) {
      try {
        onPacket(p);
      } catch (err) {
        // The caller's error, thrown where it can be seen, outside the loop that must go on.
        setImmediate(() => {
          throw err;
        });
      }
    }
  };
  void (async () => {
    for (;;) {
      const r = await receive();
      if (closed) break;
      if (r.n >= 0) {
        deliver(parseNflogDatagram(buf.subarray(0, r.n)));
        continue;
      }
      if (r.errno === EAGAIN || r.errno === EINTR) continue;
      if (r.errno === ENOBUFS) {
        dropped++; // the kernel's queue for this socket overflowed: messages lost, the socket still works
        continue;
      }
      onError?.(new Error(`nflog group ${group}: receive failed (${r.failed ?? errnoName(r.errno)})`));
      break;
    }
    // Closed only once no receive is running on it: the number is not handed to another file in between.
    close(fd);
  })();
  queueMicrotask(() => deliver(early));
  return {
    group,
    get dropped() {
      return dropped;
    },
    close() {
      closed = true;
    },
  };
}

