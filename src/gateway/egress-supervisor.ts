// The gateway's side of the egress worker (egress-worker-main.ts): starts it as the unprivileged
// user, answers its questions (after checking every field: a worker taken over by a sandbox must
// not get more from the gateway than the worker itself could do), pushes each sandbox's policy as
// judged, and keeps one running. A worker that dies takes its listeners with it: a new one is
// started (new ports, so the rules and the listener guard follow), and when workers keep dying,
// or one cannot start, egress is broken and the gateway is told so (it stops: rules stay in
// force, DNS and the proxy fail closed, and the next sbx command starts a gateway again).
import { fork, type ChildProcess } from 'node:child_process';
import { isIP } from 'node:net';
import { RuntimeError } from '../core/errors.ts';
import type { CompiledPolicy, NetworkPolicy } from '../core/network-policy.ts';
import { originalDestination } from '../net/conntrack.ts';
import type { EgressListeners } from '../net/nft-rules.ts';
import type { NetworkSummary } from '../runtime/docker.ts';
import { isId, isPort, Peer, type GatewayAsks, type LearnedAnswer, type Message, type WorkerAsks, type WorkerConfig } from './egress-ipc.ts';
import { NO_GROUP, type ParserUser } from './egress-user.ts';
import type { DnsUpstream } from './settings.ts';

export interface SupervisorOptions {
  /** The worker's bundle (dist/egress-worker.cjs). */
  entry: string;
  home: string;
  upstream: DnsUpstream;
  user: ParserUser;
  log(line: string): void;
  /** Every sandbox of this home with the policy it is judged by now (a pending update wins). */
  judged(): Map<string, NetworkPolicy>;
  /** One sandbox's policy as judged now (undefined: not a sandbox of this home). */
  policyOf(id: string): CompiledPolicy | undefined;
  /** Egress.learn, judged by the policy in force when the kernel step runs. */
  learn(id: string, name: string, answers: LearnedAnswer[]): Promise<boolean>;
  networks(): Promise<Map<string, NetworkSummary>>;
  /** A batch of the worker's network-log entries (unchecked: the receiver checks each). */
  events?(events: unknown): void;
  /** A new worker took over from one that died: its listeners must be guarded and redirected to. */
  restarted(listeners: EgressListeners): Promise<void>;
  /** No worker can be kept running: egress is broken. */
  fatal(err: Error): void;
  /** Tests: how long a worker may take to be ready, and how many deaths a minute are tolerated. */
  startTimeoutMs?: number;
  maxRestartsPerMinute?: number;
}

interface Worker {
  child: ChildProcess;
  peer: Peer<GatewayAsks, WorkerAsks>;
  listeners: EgressListeners;
  /** What this worker was told: id -> policy (the same object while it does not change). */
  sent: Map<string, { policy: NetworkPolicy; json: string }>;
}

/** A worker that does not answer within this is taken for dead (killed, then replaced). */
const ANSWER_TIMEOUT_MS = 5000;
const MAX_ANSWERS = 1024;

function bad(what: string): never {
  throw new Error(`refused: ${what}`);
}

/** An address as it may go into an nft script: plain IPv4 or IPv6 text, nothing else (no zone). */
const isAddress = (v: unknown, family?: number): v is string =>
  typeof v === 'string' && v.length <= 45 && /^[0-9a-fA-F:.]+$/.test(v) && isIP(v) !== 0 && (family === undefined || isIP(v) === family);

/** A learn question's answers, checked field by field (they are written into an nft script). */
export function checkedAnswers(raw: unknown): LearnedAnswer[] {
  if (!Array.isArray(raw) || raw.length > MAX_ANSWERS) bad('answers');
  return raw.map((a: unknown) => {
    const r = a as Partial<LearnedAnswer> | null;
    if (typeof r !== 'object' || r === null || (r.family !== 4 && r.family !== 6) || !isAddress(r.address, r.family)) bad('an answer address');
    if (typeof r.ttl !== 'number' || !Number.isFinite(r.ttl) || r.ttl < 0) bad('an answer ttl');
    return { address: r.address, family: r.family, ttl: Math.min(r.ttl, 2 ** 31) };
  });
}

export class EgressSupervisor {
  readonly #o: SupervisorOptions;
  #worker?: Worker;
  #closing = false;
  #deaths: number[] = [];
  #restarting?: Promise<void>;
  #starting?: Promise<unknown>;

  constructor(options: SupervisorOptions) {
    this.#o = options;
  }

  get listeners(): EgressListeners | undefined {
    return this.#worker?.listeners;
  }

  get pid(): number | undefined {
    return this.#worker?.child.pid;
  }

  /** Starts the worker; resolves with its listeners once it knows every sandbox's policy. */
  async start(): Promise<EgressListeners> {
    const spawning = this.#spawn();
    this.#starting = spawning;
    const worker = await spawning;
    if (this.#closing) {
      await this.#kill(worker, 'SIGTERM');
      throw new RuntimeError('the gateway is stopping');
    }
    this.#worker = worker;
    await this.update({});
    return worker.listeners;
  }

  /**
   * Tells the worker what changed: policies as judged (always, when any changed), that the
   * subnets changed (`invalidate`), and to re-judge its open connections (`recheck`). Resolves
   * once the worker did it, or once it is gone (a dead worker's connections are gone with it).
   */
  async update(o: { invalidate?: boolean; recheck?: boolean }): Promise<void> {
    const w = this.#worker;
    if (!w) return;
    const { set, drop } = this.#diff(w);
    if (!set && !drop && !o.invalidate && !o.recheck) return;
    try {
      await w.peer.ask('update', { ...(set ? { set } : {}), ...(drop ? { drop } : {}), ...o }, ANSWER_TIMEOUT_MS);
    } catch (err) {
      if (this.#worker !== w || this.#closing || w.child.exitCode !== null || w.child.signalCode !== null) return;
      // It does not answer: it is no use. Killed, it takes its connections with it.
      this.#o.log(`egress: the worker (pid ${w.child.pid}) did not answer (${(err as Error).message}): killing it`);
      await this.#kill(w);
    }
  }

  async close(): Promise<void> {
    this.#closing = true;
    // A worker started meanwhile is stopped too (by start(), which sees #closing).
    await this.#starting?.catch(() => {});
    await this.#restarting;
    const w = this.#worker;
    this.#worker = undefined;
    if (w) await this.#kill(w, 'SIGTERM');
  }

  #diff(w: Worker): { set?: Record<string, NetworkPolicy>; drop?: string[] } {
    const now = this.#o.judged();
    let set: Record<string, NetworkPolicy> | undefined;
    for (const [id, policy] of now) {
      const was = w.sent.get(id);
      if (was?.policy === policy) continue;
      const json = JSON.stringify(policy);
      w.sent.set(id, { policy, json });
      if (was?.json !== json) (set ??= {})[id] = policy;
    }
    const drop = [...w.sent.keys()].filter((id) => !now.has(id));
    for (const id of drop) w.sent.delete(id);
    return { set, drop: drop.length ? drop : undefined };
  }

  async #kill(w: Worker, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const { child } = w;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
    await gone;
    clearTimeout(timer);
  }

  #spawn(): Promise<Worker> {
    const { user } = this.#o;
    const config: WorkerConfig = { home: this.#o.home, upstream: this.#o.upstream, log: !!this.#o.events, ...(user.drop ? { drop: { uid: user.uid, gid: NO_GROUP, name: user.name } } : {}) };
    let child: ChildProcess;
    try {
      child = fork(this.#o.entry, [JSON.stringify(config)], {
        cwd: '/',
        // Nothing of the gateway's environment (NODE_OPTIONS, DOCKER_HOST...) is the worker's business.
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...(process.env.TZ ? { TZ: process.env.TZ } : {}) },
        execArgv: [],
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        serialization: 'json',
      });
    } catch (err) {
      return Promise.reject(new RuntimeError(`the egress worker did not start: ${(err as Error).message}`));
    }
    const sent = new Map<string, { policy: NetworkPolicy; json: string }>();
    let listeners: EgressListeners | undefined;
    const handlers = this.#handlers(() => listeners, sent);
    return new Promise<Worker>((resolve, reject) => {
      let settled = false;
      const failStart = (why: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        peer.close();
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
        reject(new RuntimeError(`the egress worker (DNS forwarder and proxy) did not start: ${why}`));
      };
      const peer = new Peer<GatewayAsks, WorkerAsks>(child as never, handlers, (m: Message) => {
        if (m.kind === 'events') return this.#o.events?.(m.events);
        if (m.kind === 'failed') return failStart(String(m.message).slice(0, 500));
        if (m.kind !== 'ready' || settled) return;
        const l = m.listeners;
        if (!l || !isPort(l.dns) || !isPort(l.http) || !isPort(l.tls)) return failStart('it reported no listeners');
        if (user.drop && (m.uid !== user.uid || m.gid !== NO_GROUP)) return failStart(`it runs as uid ${m.uid} gid ${m.gid}, not ${user.name} (gid ${NO_GROUP})`);
        settled = true;
        clearTimeout(timer);
        listeners = { dns: l.dns, http: l.http, tls: l.tls };
        const worker: Worker = { child, peer, listeners, sent };
        child.on('exit', (code, signal) => this.#exited(worker, code, signal));
        resolve(worker);
      });
      const timer = setTimeout(() => failStart(`not ready within ${(this.#o.startTimeoutMs ?? 10_000) / 1000}s`), this.#o.startTimeoutMs ?? 10_000);
      child.on('error', (err) => failStart(err.message));
      child.once('exit', (code, signal) => {
        peer.close();
        failStart(`it exited (${signal ?? code})`);
      });
    });
  }

  /** The gateway's answers to the worker: every argument checked, nothing trusted. */
  #handlers(listeners: () => EgressListeners | undefined, sent: Worker['sent']) {
    const o = this.#o;
    return {
      learn: async (raw: unknown) => {
        const a = (raw ?? {}) as Partial<WorkerAsks['learn']['args']>;
        if (!isId(a.id) || !o.policyOf(a.id)) bad('not a sandbox of this gateway');
        if (typeof a.name !== 'string' || a.name.length === 0 || a.name.length > 255 || !/^[\x21-\x7e]+$/.test(a.name)) bad('a name');
        return o.learn(a.id, a.name, checkedAnswers(a.answers));
      },
      conntrack: async (raw: unknown) => {
        const a = (raw ?? {}) as Partial<WorkerAsks['conntrack']['args']>;
        const l = listeners();
        // Only connections redirected to the proxy's own ports.
        if (!isAddress(a.client) || !isPort(a.clientPort) || !isPort(a.localPort) || !l || (a.localPort !== l.http && a.localPort !== l.tls)) bad('a connection');
        return (await originalDestination(a.client, a.clientPort, a.localPort)) ?? null;
      },
      networks: async () => [...(await o.networks())],
      policy: async (raw: unknown) => {
        const id = (raw as { id?: unknown } | null)?.id;
        if (!isId(id)) return null;
        const policy = o.policyOf(id)?.policy;
        if (!policy) return null;
        sent.set(id, { policy, json: JSON.stringify(policy) });
        return policy;
      },
    };
  }

  #exited(w: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    w.peer.close();
    if (this.#closing || this.#worker !== w) return;
    this.#worker = undefined;
    const now = Date.now();
    this.#deaths = [...this.#deaths.filter((t) => now - t < 60_000), now];
    const max = this.#o.maxRestartsPerMinute ?? 5;
    const how = signal ? `was killed (${signal})` : `exited (${code})`;
    if (this.#deaths.length > max) {
      this.#o.fatal(new RuntimeError(`the egress worker ${how}: ${this.#deaths.length} deaths within a minute, egress is broken`));
      return;
    }
    this.#o.log(`egress: the worker (pid ${w.child.pid}) ${how}: starting another (DNS and the proxy fail closed meanwhile)`);
    this.#restarting = (async () => {
      try {
        const listeners = await this.start();
        if (this.#closing) return;
        await this.#o.restarted(listeners);
        this.#o.log(`egress: a new worker (pid ${this.pid}) serves: dns on :${listeners.dns}, proxy on :${listeners.http} (http) and :${listeners.tls} (tls)`);
      } catch (err) {
        if (!this.#closing) this.#o.fatal(err as Error);
      } finally {
        this.#restarting = undefined;
      }
    })();
  }

  /** Tests: resolves once a restart under way is done. */
  settled(): Promise<void> {
    return this.#restarting ?? Promise.resolve();
  }
}
