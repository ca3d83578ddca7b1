// sbx's DNS forwarder: every sandbox's only resolver (its /etc/resolv.conf points at the host's
// address on its bridge, and the kernel redirects port 53 there to this server). It answers
// NXDOMAIN for names the policy denies and relays the rest to the upstream resolver; for names
// that an allow entry names, it opens the answer's addresses in the kernel for their TTL before
// the sandbox sees the answer.
//
// Hardened against the sandbox and against forged answers:
// - a query carries exactly one question (else FORMERR), and only standard queries are served;
// - each relayed query goes upstream with a fresh random id, from a UDP socket connect()ed to the
//   upstream (the kernel drops datagrams from any other address or port), and only an answer with
//   that id and the same question is taken; the sandbox gets its own id back;
// - A and AAAA records that name protected addresses (loopback, private, link-local...), the
//   host's own addresses or sandboxes are removed from the answer unless the policy names the
//   address (or `host`, for the host's), so DNS rebinding opens nothing; only what remains is learned.
import { randomInt } from 'node:crypto';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { isIP } from 'node:net';
import dnsPacket from 'dns-packet';
import { addressAllowed, decideName, isProtectedAddress, nameAllowed, normalizeName, type CompiledPolicy } from '../core/network-policy.ts';
import type { NetworkLogEntry } from '../core/network-log.ts';
import { answerMayGive } from '../core/kernel-decision.ts';
import type { LearnedAddress } from '../net/nft-rules.ts';
import type { DnsUpstream } from './settings.ts';

const FORMERR = 1;
const SERVFAIL = 2;
const NXDOMAIN = 3;
const NOTIMP = 4;
const UPSTREAM_TIMEOUT_MS = 2500;
const QR = 0x8000;

export interface DnsForwarderOptions {
  upstream: DnsUpstream;
  /** The sandbox a source address belongs to. */
  sandboxOf(address: string): Promise<string | undefined>;
  /** Its compiled policy (undefined: not ours, no answer). */
  policyOf(id: string): CompiledPolicy | undefined;
  /**
   * Opens addresses for an allowed name (on the ports its `name:port` entries name); resolves
   * false when the policy in force by then no longer allows the name (then NXDOMAIN), rejects
   * when the kernel refuses (then SERVFAIL).
   */
  learn(id: string, name: string, addresses: Array<Omit<LearnedAddress, 'ports'>>): Promise<boolean>;
  /** Whether an address is one of the host's own (its records are removed from answers). */
  isHost?(address: string): boolean;
  /** Whether an address is in a sandbox's subnet (its records are removed from answers). */
  isSandbox?(address: string): Promise<boolean>;
  log?: (line: string) => void;
  /** Each query judged, for the sandbox's network log (its answers: the addresses the sandbox got): made into an entry only if the log keeps it (its rate limit). */
  record?: (id: string, entry: () => Omit<NetworkLogEntry, 'time' | 'source'>) => void;
}

function errorAnswer(query: dnsPacket.DecodedPacket, rcode: number): Buffer {
  const rd = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  return dnsPacket.encode({ type: 'response', id: query.id, flags: rd | dnsPacket.RECURSION_AVAILABLE | rcode, questions: query.questions });
}

/** A query's one question, as answers must repeat it. */
interface Question {
  name: string;
  type: string;
  class: string;
}

/** Whether a packet is the answer to `question` sent with `id` (a response, that id, that one question). */
export function answers(reply: dnsPacket.DecodedPacket, id: number, question: Question): boolean {
  const q = reply.questions;
  return (
    reply.type === 'response' &&
    reply.id === id &&
    q?.length === 1 &&
    q[0]!.name.toLowerCase() === question.name.toLowerCase() &&
    q[0]!.type === question.type &&
    (q[0]!.class ?? 'IN') === (question.class ?? 'IN')
  );
}

/** A fresh id for a relayed query (never the sandbox's own, so its id tells nothing about ours). */
export function freshId(not: number): number {
  const id = randomInt(0, 0xffff);
  return id >= not ? id + 1 : id;
}

function withId(msg: Buffer, id: number): Buffer {
  const copy = Buffer.from(msg);
  copy.writeUInt16BE(id, 0);
  return copy;
}

export class DnsForwarder {
  readonly #o: DnsForwarderOptions;
  #udp?: UdpSocket;
  #tcp?: Server;

  constructor(options: DnsForwarderOptions) {
    this.#o = options;
  }

  /**
   * Listens on UDP and TCP on the same port (0: any free one) on every host address, IPv4 and
   * IPv6 (dual-stack; IPv4 alone when the host has no IPv6).
   */
  async listen(port = 0): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      let udp = createSocket({ type: 'udp6', ipv6Only: false });
      let host = '::';
      const bind = (s: UdpSocket, address: string) =>
        new Promise<number>((resolve, reject) => {
          s.once('error', reject);
          s.bind(port, address, () => {
            s.off('error', reject);
            resolve(s.address().port);
          });
        });
      let bound: number;
      try {
        bound = await bind(udp, host);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        udp.close();
        if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') throw err;
        udp = createSocket('udp4');
        host = '0.0.0.0';
        bound = await bind(udp, host);
      }
      const tcp = createServer((s) => this.#serveTcp(s));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen({ port: bound, host, ipv6Only: false }, () => resolve());
        });
      } catch (err) {
        udp.close();
        if (port !== 0 || attempt > 20) throw err;
        continue; // that TCP port was taken: try another pair
      }
      udp.on('error', (err) => this.#o.log?.(`dns: ${err.message}`));
      udp.on('message', (msg, rinfo) => {
        this.answer(msg, rinfo.address).then((a) => a && udp.send(a, rinfo.port, rinfo.address), () => {});
      });
      this.#udp = udp;
      this.#tcp = tcp;
      return bound;
    }
  }

  close(): void {
    this.#udp?.close();
    this.#tcp?.close();
  }

  #serveTcp(socket: Socket): void {
    socket.on('error', () => {});
    socket.setTimeout(10_000, () => socket.destroy());
    onFramedMessages(socket, (msg) => {
      this.answer(msg, socket.remoteAddress ?? '').then((a) => (a ? socket.write(framed(a)) : socket.destroy()), () => socket.destroy());
    });
  }

  /** The answer to one query from `source`, or undefined to stay silent. */
  async answer(msg: Buffer, source: string): Promise<Buffer | undefined> {
    const id = await this.#o.sandboxOf(source.replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, ''));
    const policy = id ? this.#o.policyOf(id) : undefined;
    if (!id || !policy) return undefined;
    if (msg.length < 12 || msg.readUInt16BE(2) & QR) return undefined; // not a query
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return undefined;
    }
    if (((msg.readUInt16BE(2) >> 11) & 0xf) !== 0) return errorAnswer({ ...query, questions: [] }, NOTIMP);
    // Exactly one question: the answer is judged, learned and matched by it.
    if (query.questions?.length !== 1) return errorAnswer({ ...query, questions: [] }, FORMERR);
    const question = query.questions[0]! as Question;
    const name = question.name;
    if (!name) return errorAnswer(query, FORMERR);
    const decided = decideName(policy, name);
    const record = (verdict: 'allowed' | 'blocked', answers?: string[]) =>
      this.#o.record?.(id, () => ({ protocol: 'dns', name: normalizeName(name), type: String(question.type ?? ''), verdict, rule: decided.rule, ...(answers ? { answers } : {}) }));
    if (!decided.allowed) {
      record('blocked');
      return errorAnswer(query, NXDOMAIN);
    }
    let reply: { packet: dnsPacket.DecodedPacket; bytes: Buffer };
    try {
      reply = await this.#ask(msg, question);
    } catch (err) {
      this.#o.log?.(`dns: upstream did not answer for ${name}: ${(err as Error).message}`);
      record('allowed', []);
      return errorAnswer(query, SERVFAIL);
    }
    const filtered = await this.#withoutGuarded(policy, reply.packet);
    if (filtered.removed.length) this.#o.log?.(`dns: removed ${filtered.removed.join(', ')} from the answer for ${name} (sandbox ${id}): protected addresses`);
    if (nameAllowed(policy, name)) {
      try {
        const learned = addressesOf(filtered.packet);
        if (learned.length && !(await this.#o.learn(id, normalizeName(name), learned))) {
          record('blocked'); // the policy in force (changed meanwhile) refuses it
          return errorAnswer(query, NXDOMAIN);
        }
      } catch (err) {
        this.#o.log?.(`dns: could not open the addresses of ${name}: ${(err as Error).message}`);
        record('allowed', []);
        return errorAnswer(query, SERVFAIL); // fail closed: no answer that would not work
      }
    }
    record('allowed', addressesOf(filtered.packet).map((a) => a.address));
    // The sandbox gets its own id back; the upstream's bytes unchanged unless records were removed.
    return filtered.removed.length ? dnsPacket.encode({ ...filtered.packet, id: query.id }) : withId(reply.bytes, query.id!);
  }

  /** Whether an answer may give the sandbox this address. */
  async #mayGive(policy: CompiledPolicy, address: string): Promise<boolean> {
    const host = this.#o.isHost?.(address) ?? false;
    // (Asked only where it matters: the sandbox lookup may ask the gateway.)
    const sandbox = !host && !addressAllowed(policy, address) && !isProtectedAddress(address) && ((await this.#o.isSandbox?.(address)) ?? false);
    return answerMayGive(policy, address, { host, sandbox });
  }

  /** The answer without A/AAAA records of guarded addresses (in every section). */
  async #withoutGuarded(policy: CompiledPolicy, packet: dnsPacket.DecodedPacket): Promise<{ packet: dnsPacket.DecodedPacket; removed: string[] }> {
    const removed: string[] = [];
    const keep = async (records: dnsPacket.Answer[] | undefined) => {
      const out: dnsPacket.Answer[] = [];
      for (const r of records ?? []) {
        if ((r.type === 'A' || r.type === 'AAAA') && !(await this.#mayGive(policy, String(r.data)))) removed.push(String(r.data));
        else out.push(r);
      }
      return out;
    };
    const answersKept = await keep(packet.answers);
    const authorities = await keep(packet.authorities);
    const additionals = await keep(packet.additionals);
    return removed.length ? { packet: { ...packet, answers: answersKept, authorities, additionals }, removed } : { packet, removed };
  }

  /**
   * Relays the query to the upstream with a fresh id, over UDP from a socket connected to it, and
   * over TCP when the answer was truncated. Only an answer to that id and question counts.
   */
  async #ask(msg: Buffer, question: Question): Promise<{ packet: dnsPacket.DecodedPacket; bytes: Buffer }> {
    const { host, port } = this.#o.upstream;
    const original = msg.readUInt16BE(0);
    const udpId = freshId(original);
    const udpAnswer = await new Promise<{ packet: dnsPacket.DecodedPacket; bytes: Buffer }>((resolve, reject) => {
      const s = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
      const done = (err?: Error) => {
        clearTimeout(timer);
        s.close();
        if (err) reject(err);
      };
      const timer = setTimeout(() => done(new Error('timeout')), UPSTREAM_TIMEOUT_MS);
      s.on('error', (err) => done(err));
      s.on('message', (reply) => {
        let packet: dnsPacket.DecodedPacket;
        try {
          packet = dnsPacket.decode(reply);
        } catch {
          return;
        }
        if (!answers(packet, udpId, question)) return;
        done();
        resolve({ packet, bytes: reply });
      });
      // connect(): the kernel then hands this socket only datagrams from the upstream's address and port.
      s.connect(port, host, () => s.send(withId(msg, udpId)));
    });
    if (!udpAnswer.packet.flag_tc) return udpAnswer;
    const tcpId = freshId(original);
    return new Promise((resolve, reject) => {
      const s = createConnection({ host, port });
      s.setTimeout(UPSTREAM_TIMEOUT_MS, () => s.destroy(new Error('timeout')));
      s.on('error', reject);
      s.on('close', () => reject(new Error('the upstream closed the connection without an answer')));
      onFramedMessages(s, (bytes) => {
        let packet: dnsPacket.DecodedPacket | undefined;
        try {
          packet = dnsPacket.decode(bytes);
        } catch {}
        if (!packet || !answers(packet, tcpId, question)) {
          s.destroy(new Error('the upstream answered another query over TCP'));
          return;
        }
        s.end();
        resolve({ packet, bytes: Buffer.from(bytes) });
      });
      s.write(framed(withId(msg, tcpId)));
    });
  }
}

/** DNS over TCP: every message goes with its 2-byte length. */
function framed(msg: Buffer): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(msg.length);
  return Buffer.concat([len, msg]);
}

/** Calls `onMessage` for each whole length-prefixed DNS message that arrives on a TCP socket. */
function onFramedMessages(socket: Socket, onMessage: (msg: Buffer) => void): void {
  let buffered = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
      const msg = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
      buffered = buffered.subarray(2 + msg.length);
      onMessage(msg);
    }
  });
}

/** A and AAAA records of an answer (whatever CNAMEs led there), with their TTLs. */
export function addressesOf(reply: dnsPacket.DecodedPacket): Array<Omit<LearnedAddress, 'ports'>> {
  const out: Array<Omit<LearnedAddress, 'ports'>> = [];
  for (const a of reply.answers ?? []) {
    if (a.type === 'A' || a.type === 'AAAA') out.push({ address: String(a.data), family: a.type === 'A' ? 4 : 6, ttl: a.ttl ?? 0 });
  }
  return out;
}
