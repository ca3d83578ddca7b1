// The daemon's side of the control protocol (src/daemon-client/protocol.ts). While the gateway
// runs, create, rm and the other changes are carried out here (a warm process, like dockerd for
// the docker CLI), and in agent mode every library call is. The socket is private to its user
// (host mode: SBX_HOME/run) or to the engine's group (agent mode): web pages cannot reach it.
// A client that vanishes mid-create rolls the create back.
import { createConnection, createServer, type Server } from 'node:net';
import { UsageError, type SbxError } from '../core/errors.ts';
import type { LocalSbx } from '../api/local-sbx.ts';
import type { CreateSandboxOptions } from '../api/local-sbx.ts';
import type { NetworkPolicyInput } from '../core/network-policy.ts';
import { onLines, PROTOCOL_VERSION, REMOTE_METHODS, type ControlAnswer, type ControlRequest, type DaemonHello, type RemoteMethod } from '../daemon-client/protocol.ts';
import { splice } from '../core/splice.ts';
import type { LogEnd, LogFilter, NetworkLogEntry } from '../core/network-log.ts';

/** How far (bytes not yet sent) a `network log --follow` reader may fall behind before it is cut off. */
const FOLLOW_BACKLOG = 4 * 1024 * 1024;

/** What the gateway itself answers on the socket. */
export interface GatewayOps {
  /**
   * sbx changed the store: re-read it and re-route; resolves once the change is in force.
   * `changed`: the sandboxes whose containers the change started, stopped or made (none: only the
   * store changed); when not given, any container may have. `policiesOnly`: only policies changed
   * (their rules are in force, the egress worker has them): open connections are judged again,
   * nothing is re-routed. `portsOnly`: only exposed ports changed: routes are re-read, nothing else.
   */
  reload(changed?: string[], policiesOnly?: boolean, portsOnly?: boolean): Promise<void>;
  /** Liveness and a few facts (pid, engine...): how ensureGateway knows the gateway is up. */
  health(): object;
  hello(): DaemonHello;
  /** Where `tunnel` connects: the gateway's HTTP listener. */
  listener(): { host: string; port: number };
  /** A sandbox's network log (by id), and its new entries as they come until the returned function is called. */
  networkLog(id: string, filter: LogFilter): NetworkLogEntry[];
  followLog(id: string, filter: LogFilter, onEntry: (e: NetworkLogEntry) => void, onEnd: (why: LogEnd) => void): () => void;
}

type Payload = { since?: unknown; blocked?: unknown; follow?: unknown; changed?: unknown; policiesOnly?: unknown; portsOnly?: unknown; options?: CreateSandboxOptions; ref?: string; force?: boolean; ports?: number[]; public?: boolean; domain?: unknown; policy?: NetworkPolicyInput; method?: string; args?: unknown[] };

/** A library call made by a client (agent mode); `signal` is the client's abort. */
/** A request line as JSON of the expected shape, or an error naming what is wrong. */
export function parseRequest(line: string): ControlRequest {
  let req: unknown;
  try {
    req = JSON.parse(line);
  } catch {
    throw new UsageError('the control request is not JSON');
  }
  const r = req as Record<string, unknown>;
  if (typeof req !== 'object' || req === null || Array.isArray(req)) throw new UsageError('the control request is not a JSON object');
  if (r.v !== undefined && typeof r.v !== 'number') throw new UsageError('the control request\'s "v" is not a number');
  if (typeof r.op !== 'string') throw new UsageError('the control request has no "op" string');
  if (r.payload !== undefined && (typeof r.payload !== 'object' || r.payload === null || Array.isArray(r.payload))) throw new UsageError('the control request\'s "payload" is not an object');
  const p = (r.payload ?? {}) as Record<string, unknown>;
  if (p.method !== undefined && typeof p.method !== 'string') throw new UsageError('"method" is not a string');
  if (p.args !== undefined && !Array.isArray(p.args)) throw new UsageError('"args" is not a list');
  if (p.ref !== undefined && typeof p.ref !== 'string') throw new UsageError('"ref" is not a string');
  return r as unknown as ControlRequest;
}

/** What a logged request is about: its sandbox's name or ref (strings only). */
function logTarget(op: string, p: Payload): string {
  const first = Array.isArray(p.args) ? p.args[0] : undefined;
  const name = op === 'create' ? p.options?.name : (p.ref ?? first);
  if (typeof name === 'string') return name.slice(0, 80);
  const named = first && typeof first === 'object' ? (first as { name?: unknown }).name : undefined;
  return typeof named === 'string' ? named.slice(0, 80) : op === 'create' || (op === 'call' && p.method === 'create') ? '(generated name)' : typeof first === 'number' ? String(first) : '';
}

function callMethod(sbx: LocalSbx, method: string | undefined, args: unknown[], signal: AbortSignal): Promise<unknown> {
  if (!REMOTE_METHODS.includes(method as RemoteMethod)) return Promise.reject(new UsageError(`unknown library call ${JSON.stringify(method ?? null).slice(0, 40)}`));
  // A sandbox reference is a string; anything else is refused, not converted.
  if (args[0] !== undefined && method !== 'create' && method !== 'list' && method !== 'sandboxNames' && method !== 'gatewayAddress' && method !== 'gatewayStatus' && method !== 'setPool' && method !== 'poolStatus' && typeof args[0] !== 'string') {
    return Promise.reject(new UsageError(`${method}: the sandbox reference must be a string`));
  }
  const ref = typeof args[0] === 'string' ? args[0] : '';
  switch (method as RemoteMethod) {
    case 'create':
      return sbx.create({ ...(args[0] as CreateSandboxOptions), signal });
    case 'get':
      return sbx.get(ref, args[1] as { showToken?: boolean });
    case 'resolve':
      return Promise.resolve().then(() => sbx.resolve(ref));
    case 'listPorts':
      return Promise.resolve().then(() => sbx.listPorts(ref));
    case 'getNetwork':
      return Promise.resolve().then(() => sbx.getNetwork(ref));
    case 'gatewayAddress':
      return Promise.resolve().then(() => sbx.gatewayAddress());
    case 'setPool':
      return sbx.setPool(args[0] as number);
    default:
      return Promise.resolve().then(() => (sbx[method as keyof LocalSbx] as (...x: unknown[]) => unknown).apply(sbx, args));
  }
}

export function createControlServer(sbx: LocalSbx, gateway: GatewayOps, log: (line: string) => void = () => {}): Server {
  return createServer((conn) => {
    const abort = new AbortController();
    let answered = false;
    const answer = (a: ControlAnswer) => {
      answered = true;
      conn.end(JSON.stringify(a) + '\n');
    };
    conn.on('error', () => {});
    conn.on('close', () => {
      if (!answered) abort.abort();
    });
    let started = false;
    const stop = onLines(conn, (line) => {
      if (started) {
        if (line === 'abort') abort.abort();
        return;
      }
      started = true;
      let req: ControlRequest;
      try {
        req = parseRequest(line);
      } catch (err) {
        return answer({ error: { message: (err as Error).message, exitCode: 2 } });
      }
      // A client of another protocol would misread answers (or be misread): it hears so, and
      // replaces this daemon with its own (the rules stay in force meanwhile).
      if (req.v !== PROTOCOL_VERSION) {
        return answer({ error: { message: `this sbx daemon speaks control protocol ${PROTOCOL_VERSION}, the client ${req.v ?? 1}: upgrade the client or restart the daemon`, exitCode: 1, mismatch: { daemon: PROTOCOL_VERSION, ...(req.v ? { client: req.v } : {}) } } });
      }
      const p = (req.payload ?? {}) as Payload;
      if (req.op === 'tunnel') {
        stop();
        const { host, port } = gateway.listener();
        const upstream = createConnection({ host: host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host, port });
        upstream.once('connect', () => {
          answered = true;
          conn.write(JSON.stringify({ value: true }) + '\n');
          splice(conn, upstream);
        });
        upstream.once('error', (err) => {
          if (!answered) answer({ error: { message: `the gateway did not answer: ${err.message}`, exitCode: 1 } });
        });
        return;
      }
      if (req.op === 'netlog') {
        // The answer says how many entries follow, one JSON line each (a line holds one entry:
        // the whole ring in one answer would outgrow a line); with `follow`, new entries come
        // after them until the client goes, and a last line `{"end": why}` when the sandbox or
        // the gateway goes. A reader that falls FOLLOW_BACKLOG behind is cut off.
        let record;
        try {
          record = sbx.resolve(p.ref ?? '');
        } catch (err) {
          const e = err as SbxError;
          return answer({ error: { message: e.message, exitCode: typeof e.exitCode === 'number' ? e.exitCode : 1 } });
        }
        const filter: LogFilter = { ...(typeof p.since === 'number' ? { since: p.since } : {}), ...(p.blocked === true ? { blocked: true } : {}) };
        const named = (e: NetworkLogEntry) => ({ ...e, sandbox: record.name });
        const backlog = gateway.networkLog(record.id, filter);
        stop();
        answered = true;
        conn.write(JSON.stringify({ value: { entries: backlog.length } }) + '\n');
        for (const e of backlog) conn.write(JSON.stringify(named(e)) + '\n');
        if (p.follow !== true) return void conn.end();
        const unfollow = gateway.followLog(
          record.id,
          filter,
          (e) => (conn.writableLength > FOLLOW_BACKLOG ? conn.destroy() : conn.write(JSON.stringify(named(e)) + '\n')),
          (why) => conn.end(JSON.stringify({ end: why }) + '\n'),
        );
        conn.on('close', unfollow);
        conn.resume();
        return;
      }
      let work: Promise<unknown>;
      try {
        work =
        req.op === 'call' ? callMethod(sbx, p.method, Array.isArray(p.args) ? p.args : [], abort.signal)
        : req.op === 'create' ? sbx.create({ ...p.options, signal: abort.signal })
        : req.op === 'remove' ? sbx.remove(p.ref ?? '', { force: p.force })
        : req.op === 'expose' ? sbx.exposePorts(p.ref ?? '', p.ports ?? [], { public: p.public, ...(typeof p.domain === 'string' ? { domain: p.domain } : {}) })
        : req.op === 'unexpose' ? sbx.unexposePorts(p.ref ?? '', p.ports ?? [])
        : req.op === 'network' ? sbx.updateNetwork(p.ref ?? '', p.policy ?? {})
        : req.op === 'reload' ? gateway.reload(Array.isArray(p.changed) ? p.changed.filter((id): id is string => typeof id === 'string') : undefined, p.policiesOnly === true, p.portsOnly === true)
        : req.op === 'health' ? Promise.resolve(gateway.health())
        : req.op === 'hello' ? Promise.resolve(gateway.hello())
        : Promise.reject(new UsageError(`unknown control operation ${JSON.stringify(req.op).slice(0, 40)}`));
      } catch (err) {
        // A call whose arguments make a method throw at once: an answer, never the daemon's end.
        work = Promise.reject(err);
      }
      // Reads and the gateway's own operations come with every command: not worth a line each.
      const quiet = ['reload', 'health', 'hello', 'netlog'].includes(req.op) || (req.op === 'call' && /^(list|get|resolve|listPorts|getNetwork|gatewayAddress|gatewayStatus|execTarget|sandboxNames|poolStatus)$/.test(String(p.method)));
      if (!quiet) log(`control: ${req.op === 'call' ? p.method : req.op} ${logTarget(req.op, p)}`);
      work.then(
        (value) => answer({ value }),
        (err: SbxError) => answer({ error: { message: err.message, exitCode: typeof err.exitCode === 'number' ? err.exitCode : 1, warnings: err.warnings } }),
      );
    });
  });
}
