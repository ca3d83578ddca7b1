// The daemon's control socket: when the gateway runs, `create` and `rm` are carried out by it (a
// warm process, like dockerd for the docker CLI), so a CLI run costs little more than Node's own
// start. The socket lives in SBX_HOME/run (private to its user) and speaks JSON lines: the client
// sends `{"op", "payload"}`, may later send the line `abort` (Ctrl-C), and gets one answer line
// once the work, or its rollback, is done. A client that vanishes rolls the work back too.
// The gateway's own operations (reload, health) are here too, and nowhere on its HTTP listener:
// only processes of this user reach the socket, web pages cannot.
import { createConnection, createServer, type Server } from 'node:net';
import { errorForExitCode, RuntimeError, UsageError, type SbxError } from '../core/errors.ts';
import type { CreateSandboxOptions, Sbx } from '../api/sbx.ts';
import type { NetworkPolicyInput } from '../core/network-policy.ts';

export type Operation = 'create' | 'remove' | 'expose' | 'unexpose' | 'network' | 'reload' | 'health';

/** What the gateway itself answers on the socket. */
export interface GatewayOps {
  /** sbx changed the store: re-read it and re-route; resolves once the change is in force. */
  reload(): Promise<void>;
  /** Liveness and a few facts (pid, engine...): how ensureGateway knows the gateway is up. */
  health(): object;
}

interface Request {
  op: Operation;
  payload: { options?: CreateSandboxOptions; ref?: string; force?: boolean; ports?: number[]; public?: boolean; policy?: NetworkPolicyInput };
}

interface Answer {
  value?: unknown;
  error?: { message: string; exitCode: number; warnings?: string[] };
}

/** Splits a stream of text into lines. */
function onLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buffered = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buffered += chunk;
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      onLine(line);
    }
  });
}

export function createControlServer(sbx: Sbx, gateway: GatewayOps, log: (line: string) => void = () => {}): Server {
  return createServer((conn) => {
    const abort = new AbortController();
    let answered = false;
    const answer = (a: Answer) => {
      answered = true;
      conn.end(JSON.stringify(a) + '\n');
    };
    conn.on('error', () => {});
    conn.on('close', () => {
      if (!answered) abort.abort();
    });
    let started = false;
    onLines(conn, (line) => {
      if (started) {
        if (line === 'abort') abort.abort();
        return;
      }
      started = true;
      let req: Request;
      try {
        req = JSON.parse(line) as Request;
        if (typeof req !== 'object' || req === null) throw new TypeError();
      } catch {
        return answer({ error: { message: 'the control request is not a JSON object', exitCode: 2 } });
      }
      const p = req.payload ?? {};
      const work: Promise<unknown> =
        req.op === 'create' ? sbx.create({ ...p.options, signal: abort.signal })
        : req.op === 'remove' ? sbx.remove(p.ref ?? '', { force: p.force })
        : req.op === 'expose' ? sbx.exposePorts(p.ref ?? '', p.ports ?? [], { public: p.public })
        : req.op === 'unexpose' ? sbx.unexposePorts(p.ref ?? '', p.ports ?? [])
        : req.op === 'network' ? sbx.updateNetwork(p.ref ?? '', p.policy ?? {})
        : req.op === 'reload' ? gateway.reload()
        : req.op === 'health' ? Promise.resolve(gateway.health())
        : Promise.reject(new UsageError(`unknown control operation ${String(req.op)}`));
      // reload and health come with every change and every start: not worth a line each.
      if (req.op !== 'reload' && req.op !== 'health') log(`control: ${req.op} ${req.op === 'create' ? (p.options?.name ?? '(generated name)') : p.ref}`);
      work.then(
        (value) => answer({ value }),
        (err: SbxError) => answer({ error: { message: err.message, exitCode: typeof err.exitCode === 'number' ? err.exitCode : 1, warnings: err.warnings } }),
      );
    });
  });
}

/**
 * Asks the daemon to do an operation; `signal` rolls it back (the answer still waits for that).
 * `timeoutMs` gives up waiting (for operations with nothing to roll back: reload, health).
 */
export function callDaemon<T>(socketPath: string, op: Operation, payload: Request['payload'], signal?: AbortSignal, timeoutMs?: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socketPath);
    let settled = false;
    if (timeoutMs !== undefined) {
      conn.setTimeout(timeoutMs, () => {
        if (settled) return;
        settled = true;
        conn.destroy();
        reject(new RuntimeError(`the sbx daemon did not answer ${op} within ${timeoutMs / 1000}s (see gateway.log)`));
      });
    }
    const onAbort = () => conn.write('abort\n');
    signal?.addEventListener('abort', onAbort, { once: true });
    onLines(conn, (line) => {
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      conn.end();
      try {
        const a = JSON.parse(line) as Answer;
        if (a.error) reject(errorForExitCode(a.error.exitCode, a.error.message, a.error.warnings));
        else resolve(a.value as T);
      } catch {
        reject(new RuntimeError('the sbx daemon gave an answer that is not JSON'));
      }
    });
    conn.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      settled = true;
      // Not reachable at all: nothing was started, so the caller may do the work itself.
      const unreachable = err.code === 'ENOENT' || err.code === 'ECONNREFUSED';
      reject(Object.assign(new RuntimeError(`the sbx daemon did not answer: ${err.message}`), { unreachable }));
    });
    conn.on('close', () => {
      if (!settled) {
        settled = true;
        reject(new RuntimeError('the sbx daemon closed the connection before answering (see gateway.log)'));
      }
    });
    conn.write(JSON.stringify({ op, payload }) + '\n');
    if (signal?.aborted) onAbort();
  });
}
