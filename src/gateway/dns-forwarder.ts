// sbx's DNS forwarder: every sandbox's only resolver (its /etc/resolv.conf points at the host's
// address on its bridge, and the kernel redirects port 53 there to this server). It answers
// NXDOMAIN for names the policy denies, relays the rest to the upstream resolver unchanged, and,
// for names that an allow entry names, opens the answer's addresses in the kernel for their TTL
// before the sandbox sees the answer.
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, createConnection, type Server, type Socket } from 'node:net';
import { isIP } from 'node:net';
import dnsPacket from 'dns-packet';
import { nameAllowed, nameResolvable, type CompiledPolicy } from '../core/network-policy.ts';
import type { LearnedAddress } from '../net/nft-rules.ts';
import type { DnsUpstream } from './settings.ts';

const NXDOMAIN = 3;
const SERVFAIL = 2;
const UPSTREAM_TIMEOUT_MS = 2500;

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
  log?: (line: string) => void;
}

function errorAnswer(query: dnsPacket.DecodedPacket, rcode: number): Buffer {
  const rd = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  return dnsPacket.encode({ type: 'response', id: query.id, flags: rd | dnsPacket.RECURSION_AVAILABLE | rcode, questions: query.questions });
}

export class DnsForwarder {
  readonly #o: DnsForwarderOptions;
  #udp?: UdpSocket;
  #tcp?: Server;

  constructor(options: DnsForwarderOptions) {
    this.#o = options;
  }

  /** Listens on UDP and TCP on the same port (0: any free one) on every host address. */
  async listen(port = 0): Promise<number> {
    for (let attempt = 0; ; attempt++) {
      const udp = createSocket('udp4');
      const bound = await new Promise<number>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, '0.0.0.0', () => resolve(udp.address().port));
      });
      const tcp = createServer((s) => this.#serveTcp(s));
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once('error', reject);
          tcp.listen(bound, '0.0.0.0', () => resolve());
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
    const id = await this.#o.sandboxOf(source.replace(/^::ffff:/, ''));
    const policy = id ? this.#o.policyOf(id) : undefined;
    if (!id || !policy) return undefined;
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return undefined;
    }
    const name = query.questions?.[0]?.name;
    if (!name) return errorAnswer(query, SERVFAIL);
    if (!nameResolvable(policy, name)) return errorAnswer(query, NXDOMAIN);
    let reply: Buffer;
    try {
      reply = await this.#ask(msg);
    } catch (err) {
      this.#o.log?.(`dns: upstream did not answer for ${name}: ${(err as Error).message}`);
      return errorAnswer(query, SERVFAIL);
    }
    if (nameAllowed(policy, name)) {
      try {
        const learned = addressesOf(dnsPacket.decode(reply));
        if (learned.length && !(await this.#o.learn(id, name.toLowerCase().replace(/\.$/, ''), learned))) return errorAnswer(query, NXDOMAIN);
      } catch (err) {
        this.#o.log?.(`dns: could not open the addresses of ${name}: ${(err as Error).message}`);
        return errorAnswer(query, SERVFAIL); // fail closed: no answer that would not work
      }
    }
    return reply;
  }

  /** Relays the query to the upstream over UDP, and over TCP when the answer was truncated. */
  async #ask(msg: Buffer): Promise<Buffer> {
    const { host, port } = this.#o.upstream;
    const udpAnswer = await new Promise<Buffer>((resolve, reject) => {
      const s = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
      const timer = setTimeout(() => {
        s.close();
        reject(new Error('timeout'));
      }, UPSTREAM_TIMEOUT_MS);
      s.on('error', (err) => {
        clearTimeout(timer);
        s.close();
        reject(err);
      });
      s.on('message', (reply) => {
        if (reply.length < 2 || reply.readUInt16BE(0) !== msg.readUInt16BE(0)) return;
        clearTimeout(timer);
        s.close();
        resolve(reply);
      });
      s.send(msg, port, host);
    });
    if (!(udpAnswer.readUInt16BE(2) & dnsPacket.TRUNCATED_RESPONSE)) return udpAnswer;
    return new Promise<Buffer>((resolve, reject) => {
      const s = createConnection({ host, port });
      s.setTimeout(UPSTREAM_TIMEOUT_MS, () => s.destroy(new Error('timeout')));
      s.on('error', reject);
      s.on('close', () => reject(new Error('the upstream closed the connection without an answer')));
      onFramedMessages(s, (answer) => {
        s.end();
        resolve(answer);
      });
      s.write(framed(msg));
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
