// Reaching a port of a sandbox: its address (cached, dropped on Docker events), waking it when
// it is paused or stopped (Tensorlake-style auto-resume), and connecting directly to its bridge
// address or, for servers bound only to loopback, through its relay.
import { createConnection, type Socket } from 'node:net';
import type { LocalSbx } from '../api/local-sbx.ts';
import { objectNames, type SandboxRecord } from '../core/sandbox.ts';
import type { Runtime } from '../runtime/docker.ts';
import type { GatewayError } from './responses.ts';
import { Relays, UpstreamError } from './relays.ts';

interface Target {
  ip?: string;
  pid?: number;
  state: 'running' | 'paused' | 'stopped' | 'missing';
}

export class GatewayFailure extends Error {
  readonly error: GatewayError;
  constructor(error: GatewayError) {
    super(error.message);
    this.error = error;
  }
}

const CONNECT_TIMEOUT_MS = 1500;

export class Targets {
  readonly #cache = new Map<string, Target>();
  readonly #waking = new Map<string, Promise<void>>();
  readonly #sbx: LocalSbx;
  readonly #runtime: Runtime;
  readonly #relays: Relays;
  readonly startTimeoutMs: number;

  constructor(sbx: LocalSbx, runtime: Runtime, relays: Relays, startTimeoutMs = 30_000) {
    this.#sbx = sbx;
    this.#runtime = runtime;
    this.#relays = relays;
    this.startTimeoutMs = startTimeoutMs;
  }

  invalidate(id: string): void {
    this.#cache.delete(id);
  }

  readonly #wokeAt = new Map<string, number>();
  readonly #stateListeners: ((id: string) => void)[] = [];

  /** `fn(id)` when a sandbox's state changes or is found asleep: connections pooled to it must go. */
  onStateChange(fn: (id: string) => void): void {
    this.#stateListeners.push(fn);
  }

  /** The sandbox was paused, resumed, stopped or started (a Docker event). */
  stateChanged(id: string): void {
    this.#cache.delete(id);
    for (const fn of this.#stateListeners) fn(id);
  }

  /**
   * Before a request reuses a pooled connection: the sandbox's state decides (the cache, filled
   * from Docker and dropped on its events and on every reload), not a failed connect, since a
   * connection into a paused sandbox neither fails nor answers. Asleep: its pooled connections
   * are dropped and it is woken.
   */
  async awake(record: SandboxRecord): Promise<void> {
    const t = this.#cache.get(record.id) ?? (await this.#inspect(record));
    if (t.state === 'running') return;
    for (const fn of this.#stateListeners) fn(record.id);
    await this.#wake(record);
    this.#wokeAt.set(record.id, Date.now());
  }

  /** After sbx changed something (it tells the gateway): look at every sandbox afresh. */
  invalidateAll(): void {
    this.#cache.clear();
  }

  async #inspect(record: SandboxRecord): Promise<Target> {
    const c = await this.#runtime.inspectContainer(objectNames(record.id).container);
    const t: Target = c ? { state: c.state, ip: c.ip, pid: c.pid } : { state: 'missing' };
    this.#cache.set(record.id, t);
    return t;
  }

  /** A connection to `port` in the sandbox, waking the sandbox first when it sleeps. */
  async connect(record: SandboxRecord, port: number): Promise<Socket> {
    let t = this.#cache.get(record.id) ?? (await this.#inspect(record));
    // Woken just now (by awake(), before the request): its server may take a moment to listen.
    let woke = Date.now() - (this.#wokeAt.get(record.id) ?? 0) < this.startTimeoutMs;
    if (t.state !== 'running') {
      await this.#wake(record);
      woke = true;
      t = await this.#inspect(record);
    }
    try {
      return await this.#open(record, t, port);
    } catch (err) {
      // The cache may be stale (paused or restarted behind our back): look again, once.
      const fresh = await this.#inspect(record);
      if (fresh.state !== 'running') {
        await this.#wake(record);
        woke = true;
      }
      if (woke) return this.#openWhenListening(record, port);
      if (fresh.ip !== t.ip || fresh.pid !== t.pid) return this.#open(record, fresh, port);
      throw err;
    }
  }

  /** Resume a paused sandbox or start a stopped one; concurrent requests share the wake-up. */
  async #wake(record: SandboxRecord): Promise<void> {
    let waking = this.#waking.get(record.id);
    if (!waking) {
      waking = (async () => {
        const t = await this.#inspect(record);
        if (t.state === 'paused') await this.#sbx.resume(record.id);
        else if (t.state !== 'running') await this.#sbx.start(record.id);
        this.#cache.delete(record.id);
      })().finally(() => this.#waking.delete(record.id));
      this.#waking.set(record.id, waking);
    }
    try {
      await waking;
    } catch (err) {
      throw new GatewayFailure({ status: 502, code: 'wake_failed', message: `sandbox ${record.name} could not be started: ${(err as Error).message}` });
    }
  }

  /** After a start, servers take a moment: retry until the port listens (bounded). */
  async #openWhenListening(record: SandboxRecord, port: number): Promise<Socket> {
    const deadline = Date.now() + this.startTimeoutMs;
    for (;;) {
      const t = await this.#inspect(record);
      try {
        return await this.#open(record, t, port);
      } catch (err) {
        if (Date.now() > deadline) {
          throw new GatewayFailure({ status: 504, code: 'start_timeout', message: `sandbox ${record.name} started, but nothing listened on port ${port} within ${Math.round(this.startTimeoutMs / 1000)}s` });
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async #open(record: SandboxRecord, t: Target, port: number): Promise<Socket> {
    if (t.state !== 'running' || !t.pid) {
      throw new GatewayFailure({ status: 502, code: 'not_running', message: `sandbox ${record.name} is ${t.state}` });
    }
    if (t.ip) {
      try {
        return await connectTcp(t.ip, port);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ECONNREFUSED') throw err;
      }
    }
    // Nothing on the bridge address: maybe a server bound to the sandbox's loopback only.
    let relayed: Socket;
    try {
      relayed = await this.#relays.connect(record.id, t.pid, port);
    } catch (err) {
      if (err instanceof UpstreamError && err.code === 'ECONNREFUSED') {
        throw new GatewayFailure({ status: 502, code: 'nothing_listening', message: `nothing listens on port ${port} in sandbox ${record.name} yet` });
      }
      throw err;
    }
    return t.ip ? this.#preferBridge(t.ip, port, relayed) : relayed;
  }

  /**
   * Or a server that began to listen on every address between the two tries (it was starting):
   * the bridge address answers now, and is used instead of the relay, whose connection would
   * otherwise hold a server that serves one connection at a time. A loopback-only server costs one
   * more refused connect per relayed connection.
   */
  async #preferBridge(ip: string, port: number, relayed: Socket): Promise<Socket> {
    try {
      const direct = await connectTcp(ip, port);
      relayed.destroy();
      return direct;
    } catch {
      return relayed;
    }
  }
}

function connectTcp(host: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ host, port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(Object.assign(new Error(`connect to ${host}:${port} timed out`), { code: 'ETIMEDOUT' }));
    }, CONNECT_TIMEOUT_MS);
    sock.once('connect', () => {
      clearTimeout(timer);
      sock.setNoDelay(true);
      resolve(sock);
    });
    sock.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
