// The one module through which the library talks to the sbx daemon (see protocol.ts). A
// transport gives a fresh byte stream to the daemon per request: its unix socket where the
// client can open it (the local shortcut), else a `docker exec` into the agent (any engine the
// Docker API reaches: unix, tcp, ssh).
import { createConnection } from 'node:net';
import type { Duplex } from 'node:stream';
import { errorForExitCode, RuntimeError } from '../core/errors.ts';
import { onLines, PROTOCOL_VERSION, type ControlAnswer, type DaemonHello, type Operation, type RemoteMethod } from './protocol.ts';

/** Opens a new stream to the daemon; rejects with `unreachable: true` when nothing listens. */
export type Transport = () => Promise<Duplex>;

export function unixTransport(path: string): Transport {
  return () =>
    new Promise((resolve, reject) => {
      const conn = createConnection(path);
      conn.once('connect', () => {
        conn.off('error', reject);
        resolve(conn);
      });
      conn.once('error', (err: NodeJS.ErrnoException) => {
        const unreachable = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
        reject(Object.assign(new RuntimeError(`the sbx daemon did not answer: ${err.message}`), { unreachable, code: err.code }));
      });
    });
}

export interface CallOptions {
  signal?: AbortSignal;
  /** Gives up waiting (for operations with nothing to roll back: reload, health, hello). */
  timeoutMs?: number;
  /** Where the request came from, for the daemon's log. */
  what?: string;
}

export class MismatchError extends RuntimeError {
  readonly daemon: number;
  constructor(daemon: number) {
    super(`the sbx daemon speaks control protocol ${daemon}, this sbx ${PROTOCOL_VERSION}`);
    this.daemon = daemon;
  }
}

/** The value of a daemon's answer line, or the error it carries (exit code kept; another protocol: MismatchError). */
function answerValue<T>(line: string): T {
  let a: ControlAnswer;
  try {
    a = JSON.parse(line) as ControlAnswer;
  } catch {
    throw new RuntimeError('the sbx daemon gave an answer that is not JSON');
  }
  if (a.error?.mismatch) throw new MismatchError(a.error.mismatch.daemon);
  if (a.error) throw errorForExitCode(a.error.exitCode, a.error.message, a.error.warnings);
  return a.value as T;
}

export class DaemonClient {
  readonly #transport: Transport;
  constructor(transport: Transport) {
    this.#transport = transport;
  }

  /** Sends one request and resolves with the answer's value (errors keep their exit code). */
  async request<T>(op: Operation, payload: Record<string, unknown> = {}, options: CallOptions = {}): Promise<T> {
    const conn = await this.#transport();
    const { signal, timeoutMs } = options;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      if (timeoutMs !== undefined) {
        const timer = setTimeout(() => settle(() => {
          conn.destroy();
          reject(Object.assign(new RuntimeError(`the sbx daemon did not answer ${op} within ${timeoutMs / 1000}s (see its log: sbx gateway status)`), { timedOut: true }));
        }), timeoutMs);
        timer.unref();
        conn.once('close', () => clearTimeout(timer));
      }
      const onAbort = () => conn.write('abort\n');
      signal?.addEventListener('abort', onAbort, { once: true });
      onLines(conn, (line) => {
        settle(() => {
          conn.end();
          try {
            resolve(answerValue<T>(line));
          } catch (err) {
            reject(err);
          }
        });
      });
      conn.on('error', (err) => settle(() => reject(new RuntimeError(`the sbx daemon did not answer: ${err.message}`))));
      const closed = () => settle(() => reject(new RuntimeError('the sbx daemon closed the connection before answering (see its log: sbx gateway status)')));
      conn.on('close', closed);
      conn.on('end', closed);
      conn.write(JSON.stringify({ v: PROTOCOL_VERSION, op, payload }) + '\n');
      if (signal?.aborted) onAbort();
    });
  }

  /** Calls a library method in the daemon. */
  call<T>(method: RemoteMethod, args: unknown[], options: CallOptions = {}): Promise<T> {
    return this.request<T>('call', { method, args }, options);
  }

  hello(timeoutMs = 5000): Promise<DaemonHello> {
    return this.request<DaemonHello>('hello', {}, { timeoutMs });
  }

  /**
   * An operation whose answer is followed by more JSON lines (`netlog` with `follow`): resolves
   * with the answer's value and the lines after it, as they come, until the daemon or `signal` ends them.
   */
  async follow<T, L>(op: Operation, payload: Record<string, unknown>, signal?: AbortSignal): Promise<{ value: T; lines: AsyncIterable<L> }> {
    const conn = await this.#transport();
    const queue: L[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    const end = () => {
      ended = true;
      wake?.();
    };
    const onAbort = () => {
      conn.destroy();
      end();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort(); // aborted before it was asked: it stops at once
    const value = await new Promise<T>((resolve, reject) => {
      let first = true;
      onLines(conn, (line) => {
        if (first) {
          first = false;
          try {
            return resolve(answerValue<T>(line));
          } catch (err) {
            conn.destroy();
            return reject(err);
          }
        }
        try {
          queue.push(JSON.parse(line) as L);
          wake?.();
        } catch {
          conn.destroy(); // not JSON: the stream ends here
        }
      });
      conn.once('error', (err) => {
        if (first) reject(new RuntimeError(`the sbx daemon did not answer: ${err.message}`));
        end();
      });
      conn.once('close', () => {
        if (first) reject(new RuntimeError('the sbx daemon closed the connection before answering (see its log: sbx gateway status)'));
        end();
      });
      conn.write(JSON.stringify({ v: PROTOCOL_VERSION, op, payload }) + '\n');
    });
    async function* lines(): AsyncGenerator<L> {
      try {
        for (;;) {
          while (queue.length) yield queue.shift()!;
          if (ended) return;
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      } finally {
        signal?.removeEventListener('abort', onAbort);
        conn.destroy();
      }
    }
    return { value, lines: lines() };
  }

  /** A byte stream to the daemon's HTTP listener (the gateway), through the daemon itself. */
  async tunnel(): Promise<Duplex> {
    const conn = await this.#transport();
    return new Promise((resolve, reject) => {
      const stop = onLines(conn, (line) => {
        stop();
        try {
          answerValue(line);
        } catch (err) {
          conn.destroy();
          return reject(err);
        }
        resolve(conn);
      });
      conn.once('error', (err) => reject(new RuntimeError(`the sbx daemon did not answer: ${err.message}`)));
      conn.once('end', () => reject(new RuntimeError('the sbx daemon closed the connection before answering (see its log: sbx gateway status)')));
      conn.write(JSON.stringify({ v: PROTOCOL_VERSION, op: 'tunnel', payload: {} }) + '\n');
    });
  }
}
