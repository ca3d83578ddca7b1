// HTTP/2 to the sandboxes, for requests that came as HTTP/2: one h2c session (prior knowledge) per
// sandbox port, kept while it lives. Whether a port speaks HTTP/2 is learnt on the first such
// request: a port that answers the preface with bytes that are not HTTP/2 (an HTTP/1.1 server says
// 400) gets HTTP/1.1 for H2_NO_MS, or until the sandbox changes state; one that closes or stays
// silent gets HTTP/1.1 for that request only, and is asked again next time.
import { connect, constants, type ClientHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { SandboxRecord } from '../core/sandbox.ts';

/** How long a port has to answer the preface with SETTINGS before a request goes as HTTP/1.1. */
export const H2_PROBE_MS = 1500;
/** How long a port that answered in HTTP/1.1 is not asked again. */
export const H2_NO_MS = 60_000;

export class H2Upstreams {
  readonly #connect: (record: SandboxRecord, port: number) => Promise<Socket>;
  readonly #sessions = new Map<string, Promise<ClientHttp2Session | undefined>>();
  /** Ports that answered in HTTP/1.1: until when they are not asked again. */
  readonly #http1 = new Map<string, number>();
  /** Bumped by forget(): a probe begun before it does not record what it learnt. */
  readonly #generation = new Map<string, number>();

  /**
   * What each port answered the preface with, kept until its sandbox changes state (unlike #http1,
   * which only spares a port the question for a while): nginx routes a port's HTTP/2 by it
   * (fastpath.ts), and `changed` hears when it grows or changes.
   */
  readonly #modes = new Map<string, 'h1' | 'h2'>();
  readonly #changed?: () => void;

  constructor(connectTo: (record: SandboxRecord, port: number) => Promise<Socket>, changed?: () => void) {
    this.#connect = connectTo;
    this.#changed = changed;
  }

  /** What this port answered the preface with, if it was asked since its sandbox last changed state. */
  mode(id: string, port: number): 'h1' | 'h2' | undefined {
    return this.#modes.get(`${id}:${port}`);
  }

  /** Forgets the ports of sandboxes not in `ids` (removed ones). */
  keepOnly(ids: ReadonlySet<string>): void {
    for (const key of [...this.#modes.keys()]) if (!ids.has(key.slice(0, key.indexOf(':')))) this.#modes.delete(key);
  }

  /** A ready session to this port, or undefined when the request goes as HTTP/1.1. Rejects when the port cannot be reached. */
  session(record: SandboxRecord, port: number): Promise<ClientHttp2Session | undefined> {
    const key = `${record.id}:${port}`;
    if ((this.#http1.get(key) ?? 0) > Date.now()) return Promise.resolve(undefined);
    this.#http1.delete(key);
    let pending = this.#sessions.get(key);
    if (!pending) {
      const p = this.#open(record, port, key);
      pending = p;
      this.#sessions.set(key, p);
      const drop = () => {
        if (this.#sessions.get(key) === p) this.#sessions.delete(key);
      };
      p.then((s) => {
        if (!s) return drop();
        s.once('close', drop);
        // A session going away takes no new streams: the next request opens another.
        s.once('goaway', drop);
      }, drop);
    }
    return pending;
  }

  /** Forgets what was learnt of a sandbox's ports and closes its sessions (its state changed). */
  forget(id: string): void {
    this.#generation.set(id, (this.#generation.get(id) ?? 0) + 1);
    for (const key of [...this.#http1.keys()]) if (key.startsWith(`${id}:`)) this.#http1.delete(key);
    for (const key of [...this.#modes.keys()]) if (key.startsWith(`${id}:`)) this.#modes.delete(key);
    for (const [key, pending] of this.#sessions) {
      if (!key.startsWith(`${id}:`)) continue;
      this.#sessions.delete(key);
      void pending.then((s) => s?.close(), () => {});
    }
  }

  close(): void {
    for (const pending of this.#sessions.values()) void pending.then((s) => s?.destroy(), () => {});
    this.#sessions.clear();
  }

  async #open(record: SandboxRecord, port: number, key: string): Promise<ClientHttp2Session | undefined> {
    const generation = this.#generation.get(record.id) ?? 0;
    const socket = await this.#connect(record, port);
    // No server push: nothing a sandbox pushes is wanted, and a pushed stream is one more thing it could break.
    const session = connect(`http://${record.id}:${port}`, { createConnection: () => socket, settings: { enablePush: false } });
    session.on('stream', (pushed) => {
      pushed.on('error', () => {});
      pushed.close(constants.NGHTTP2_REFUSED_STREAM);
    });
    const answer = await new Promise<'h2' | 'h1' | 'none'>((resolve) => {
      const timer = setTimeout(() => resolve('none'), H2_PROBE_MS);
      const done = (a: 'h2' | 'h1' | 'none') => () => {
        clearTimeout(timer);
        resolve(a);
      };
      session.once('remoteSettings', done('h2'));
      // Bytes that are not an HTTP/2 frame (an HTTP/1.1 status line) are a protocol error.
      session.once('error', done('h1'));
      session.once('close', done('none'));
    });
    session.on('error', () => {});
    const current = (this.#generation.get(record.id) ?? 0) === generation;
    if (answer !== 'none' && current && this.#modes.get(key) !== answer) {
      this.#modes.set(key, answer);
      this.#changed?.();
    }
    if (answer !== 'h2') {
      session.destroy();
      if (answer === 'h1' && current) this.#http1.set(key, Date.now() + H2_NO_MS);
      return undefined;
    }
    // An idle session costs the sandbox nothing; it is not held open for the gateway's sake.
    session.unref();
    return session;
  }
}
