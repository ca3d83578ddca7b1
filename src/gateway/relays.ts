// Relays into sandboxes' network namespaces (see relay-main.ts): one per running sandbox, started
// on first need, replaced when the sandbox's init process (and so its namespace) changes.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';

interface Relay {
  pid: number;
  child: ChildProcess;
  socket: string;
  ready: Promise<void>;
}

export class UpstreamError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

export class Relays {
  readonly #relays = new Map<string, Relay>();
  readonly #runDir: string;
  readonly #entry: string;

  constructor(runDir: string, entry: string) {
    this.#runDir = runDir;
    this.#entry = entry;
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
  }

  /** A connection to `port` on the sandbox's loopback, through its relay. */
  async connect(id: string, pid: number, port: number): Promise<Socket> {
    const relay = this.#relayFor(id, pid);
    await relay.ready;
    const sock = createConnection(relay.socket);
    // A relay that cannot be reached, or breaks before it answers, is replaced on the next
    // connection. Once it has answered, an error is that one connection's (a reset from the
    // server): the relay goes on carrying the others, and the caller's own handlers see it.
    const broken = () => this.stop(id);
    sock.once('error', broken);
    sock.write(`${port}\n`);
    try {
      return await relayAnswer(sock);
    } finally {
      sock.off('error', broken);
      sock.on('error', () => {});
    }
  }

  #relayFor(id: string, pid: number): Relay {
    const existing = this.#relays.get(id);
    if (existing && existing.pid === pid && existing.child.exitCode === null) return existing;
    if (existing) this.stop(id);
    const socket = join(this.#runDir, `${id}.sock`);
    const child = spawn('nsenter', [`--net=/proc/${pid}/ns/net`, '--', process.execPath, this.#entry, socket], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const ready = new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) => reject(new UpstreamError('ERELAY', `the relay into sandbox ${id} exited (${code})`)));
      child.once('error', (err) => reject(new UpstreamError('ERELAY', `cannot start the relay (nsenter): ${err.message}`)));
    });
    ready.catch(() => this.#relays.delete(id));
    const relay = { pid, child, socket, ready };
    this.#relays.set(id, relay);
    return relay;
  }

  stop(id: string): void {
    const relay = this.#relays.get(id);
    if (!relay) return;
    this.#relays.delete(id);
    relay.child.stdin?.end();
    relay.child.kill('SIGTERM');
  }

  stopAll(): void {
    for (const id of [...this.#relays.keys()]) this.stop(id);
  }
}

/**
 * The relay's first line ("OK", or "ERR <code>") off `sock`, which then resolves with nothing of the
 * server's own bytes read: they stay buffered until the caller reads (a server that speaks first,
 * such as SSH or SMTP, may send its greeting before the caller is ready). 'readable' with read(),
 * not 'data': a socket left flowing with no 'data' listener drops what arrives.
 */
export function relayAnswer(sock: Socket): Promise<Socket> {
  return new Promise((resolve, reject) => {
    let line = '';
    const done = () => {
      sock.off('readable', onReadable);
      sock.off('error', onError);
      sock.off('close', onClose);
    };
    const onError = (err: NodeJS.ErrnoException) => {
      done();
      reject(new UpstreamError(err.code ?? 'EFAIL', `relay: ${err.message}`));
    };
    const onClose = () => {
      done();
      reject(new UpstreamError('EFAIL', 'relay: closed before it answered'));
    };
    const onReadable = () => {
      for (let chunk: Buffer | null; (chunk = sock.read() as Buffer | null) !== null; ) {
        line += chunk.toString('latin1');
        const nl = line.indexOf('\n');
        if (nl < 0) continue;
        done();
        const answer = line.slice(0, nl);
        const rest = line.slice(nl + 1);
        if (answer === 'OK') {
          if (rest) sock.unshift(Buffer.from(rest, 'latin1'));
          resolve(sock);
        } else {
          sock.destroy();
          const code = answer.replace(/^ERR\s*/, '') || 'EFAIL';
          reject(new UpstreamError(code, `relay: ${code}`));
        }
        return;
      }
    };
    sock.on('readable', onReadable);
    sock.once('error', onError);
    sock.once('close', onClose);
  });
}
