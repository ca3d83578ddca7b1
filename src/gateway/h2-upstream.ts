// HTTP/2 to the sandboxes, for requests that came as HTTP/2: one h2c session (prior knowledge) per
// sandbox port, kept while it lives. Whether a port speaks HTTP/2 is learnt on the first such
// request and remembered until the sandbox changes state: a server that answers the preface with
// anything but HTTP/2 SETTINGS (an HTTP/1.1 server says 400 or closes) gets HTTP/1.1 instead.
import { connect, type ClientHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { SandboxRecord } from '../core/sandbox.ts';

/** How long a port has to answer the preface with SETTINGS before it is taken for HTTP/1.1. */
export const H2_PROBE_MS = 1500;

export class H2Upstreams {
  readonly #connect: (record: SandboxRecord, port: number) => Promise<Socket>;
  readonly #sessions = new Map<string, Promise<ClientHttp2Session | undefined>>();
  readonly #http1 = new Set<string>();

  constructor(connectTo: (record: SandboxRecord, port: number) => Promise<Socket>) {
    this.#connect = connectTo;
  }

  /** A ready session to this port, or undefined when it speaks HTTP/1.1 only. Rejects when it cannot be reached. */
  session(record: SandboxRecord, port: number): Promise<ClientHttp2Session | undefined> {
    const key = `${record.id}:${port}`;
    if (this.#http1.has(key)) return Promise.resolve(undefined);
    let pending = this.#sessions.get(key);
    if (!pending) {
      pending = this.#open(record, port, key);
      this.#sessions.set(key, pending);
      pending.then(
        (s) => (s ? s.once('close', () => this.#sessions.get(key) === pending && this.#sessions.delete(key)) : this.#sessions.delete(key)),
        () => this.#sessions.delete(key),
      );
    }
    return pending;
  }

  /** Forgets what was learnt of a sandbox's ports and closes its sessions (its state changed). */
  forget(id: string): void {
    for (const key of [...this.#http1]) if (key.startsWith(`${id}:`)) this.#http1.delete(key);
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
    const socket = await this.#connect(record, port);
    const session = connect(`http://${record.id}:${port}`, { createConnection: () => socket });
    const speaks = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), H2_PROBE_MS);
      const done = (ok: boolean) => () => {
        clearTimeout(timer);
        resolve(ok);
      };
      session.once('remoteSettings', done(true));
      session.once('error', done(false));
      session.once('close', done(false));
    });
    if (!speaks) {
      session.destroy();
      this.#http1.add(key);
      return undefined;
    }
    session.on('error', () => {});
    // An idle session costs the sandbox nothing; it is not held open for the gateway's sake.
    session.unref();
    return session;
  }
}
