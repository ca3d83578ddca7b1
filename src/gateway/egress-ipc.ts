// The messages between the gateway (root) and its egress worker (the DNS forwarder and the
// Host/SNI proxy, which parse what sandboxes send, in a process of an unprivileged user). Each
// side asks the other and awaits one answer per question (`seq` pairs them); the worker also says
// once that it is ready (its listeners) or why it could not start.
//
// The worker asks for what needs root or the engine: learning a DNS answer's addresses into the
// kernel (judged by the gateway, which holds the authoritative policy), a redirected connection's
// original destination (conntrack is root-only), the sandboxes' subnets (Docker) and a sandbox's
// policy. The gateway pushes each sandbox's policy as judged, tells it when the subnets changed,
// and asks it to re-judge its open connections (a policy update returns once that is done).
//
// The gateway treats every question from the worker as hostile input: it checks each field
// (see egress-supervisor.ts) before anything reaches nft.
import type { NetworkPolicy } from '../core/network-policy.ts';
import type { NetworkSummary } from '../runtime/docker.ts';
import type { OriginalDestination } from '../net/conntrack.ts';
import type { EgressListeners, LearnedAddress } from '../net/nft-rules.ts';
import type { DnsUpstream } from './settings.ts';

export type LearnedAnswer = Omit<LearnedAddress, 'ports'>;

/** What the worker asks the gateway. */
export type WorkerAsks = {
  /** Open these addresses for `name` (resolves false when the policy in force refuses the name). */
  learn: { args: { id: string; name: string; answers: LearnedAnswer[] }; result: boolean };
  /** The original destination of a connection redirected to one of the proxy's ports. */
  conntrack: { args: { client: string; clientPort: number; localPort: number }; result: OriginalDestination | null };
  /** The subnets of this home's sandboxes (id -> subnet, subnet6). */
  networks: { args: Record<string, never>; result: Array<[string, NetworkSummary]> };
  /** A sandbox's policy as judged now (null: not a sandbox of this home). */
  policy: { args: { id: string }; result: NetworkPolicy | null };
};

/** What the gateway asks the worker. */
export type GatewayAsks = {
  /**
   * Policies as judged (`set`: new or changed, `drop`: gone), then, when asked, forget the known
   * subnets and re-judge the open proxied connections. Answered once all of it is done.
   */
  update: { args: { set?: Record<string, NetworkPolicy>; drop?: string[]; invalidate?: boolean; recheck?: boolean }; result: { cut: number } };
};

export interface Asks {
  [op: string]: { args: unknown; result: unknown };
}

/** How the gateway starts the worker (its one argument, as JSON). */
export interface WorkerConfig {
  home: string;
  upstream: DnsUpstream;
  /** Drop to this user once the listeners are bound, before a byte is read (absent: stay as started). */
  drop?: { uid: number; gid: number; name: string };
  /** Send the network log's entries (`events`); false with SBX_NETWORK_LOG=0. */
  log?: boolean;
}

/** A sandbox id as the worker may name one (its words are checked, never trusted). */
export const isId = (v: unknown): v is string => typeof v === 'string' && /^[a-z0-9]{1,64}$/.test(v);
export const isPort = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 1 && (v as number) <= 65535;

export type Message =
  | { kind: 'ask'; seq: number; op: string; args: unknown }
  | { kind: 'answer'; seq: number; value?: unknown; error?: string }
  | { kind: 'ready'; listeners: EgressListeners; uid: number; gid: number }
  | { kind: 'failed'; message: string }
  /** The worker's decisions for the network log (no answer): checked entry by entry by the gateway. */
  | { kind: 'events'; events: Array<{ id: string; entry: unknown }> };

/** A process's IPC channel: a ChildProcess (the gateway's side) or `process` (the worker's). */
export interface Endpoint {
  send?(message: Message, callback?: (error: Error | null) => void): boolean;
  on(event: 'message', listener: (message: unknown) => void): unknown;
  off(event: 'message', listener: (message: unknown) => void): unknown;
  readonly connected?: boolean;
}

type Handlers<A extends Asks> = { [K in keyof A]: (args: unknown) => Promise<A[K]['result']> };

/** One side of the channel: asks `Theirs`, answers `Mine` (whose handlers check their arguments). */
export class Peer<Theirs extends Asks, Mine extends Asks> {
  readonly #endpoint: Endpoint;
  readonly #handlers: Handlers<Mine>;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer?: NodeJS.Timeout }>();
  readonly #onOther: (message: Message) => void;
  readonly #listener = (m: unknown) => this.#receive(m);
  #seq = 0;
  #closed?: Error;

  constructor(endpoint: Endpoint, handlers: Handlers<Mine>, onOther: (message: Message) => void = () => {}) {
    this.#endpoint = endpoint;
    this.#handlers = handlers;
    this.#onOther = onOther;
    endpoint.on('message', this.#listener);
  }

  /** Asks the other side; rejects when it answers an error, after `timeoutMs`, or when the channel closes. */
  ask<K extends keyof Theirs & string>(op: K, args: Theirs[K]['args'], timeoutMs?: number): Promise<Theirs[K]['result']> {
    if (this.#closed) return Promise.reject(this.#closed);
    const seq = ++this.#seq;
    return new Promise((resolve, reject) => {
      const entry: { resolve: (v: unknown) => void; reject: (e: Error) => void; timer?: NodeJS.Timeout } = { resolve: resolve as (v: unknown) => void, reject };
      if (timeoutMs !== undefined) {
        entry.timer = setTimeout(() => {
          this.#pending.delete(seq);
          reject(new Error(`no answer to ${op} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.#pending.set(seq, entry);
      if (!this.#send({ kind: 'ask', seq, op, args })) {
        this.#settle(seq);
        reject(new Error('the channel is closed'));
      }
    });
  }

  /** Sends a message that expects no answer. */
  note(message: Extract<Message, { kind: 'ready' | 'failed' | 'events' }>): boolean {
    return this.#send(message);
  }

  /** The channel is gone: every question still open fails. */
  close(reason = new Error('the channel is closed')): void {
    if (this.#closed) return;
    this.#closed = reason;
    this.#endpoint.off('message', this.#listener);
    for (const seq of [...this.#pending.keys()]) this.#settle(seq)?.reject(reason);
  }

  #send(message: Message): boolean {
    if (this.#closed || this.#endpoint.connected === false || !this.#endpoint.send) return false;
    try {
      // With a callback, a channel that breaks under the write reports here, not as an 'error'
      // event (unhandled, it would end the process); the process's exit is handled elsewhere.
      this.#endpoint.send(message, () => {});
      return true;
    } catch {
      return false;
    }
  }

  #settle(seq: number) {
    const entry = this.#pending.get(seq);
    if (!entry) return undefined;
    this.#pending.delete(seq);
    clearTimeout(entry.timer);
    return entry;
  }

  #receive(raw: unknown): void {
    if (typeof raw !== 'object' || raw === null) return;
    const m = raw as Message;
    if (m.kind === 'answer' && Number.isSafeInteger(m.seq)) {
      const entry = this.#settle(m.seq);
      if (!entry) return;
      if (typeof m.error === 'string') entry.reject(new Error(m.error));
      else entry.resolve(m.value ?? null);
      return;
    }
    if (m.kind === 'ask' && Number.isSafeInteger(m.seq)) {
      const handler = Object.hasOwn(this.#handlers, m.op) ? this.#handlers[m.op as keyof Mine] : undefined;
      const work = handler ? Promise.resolve().then(() => handler(m.args)) : Promise.reject(new Error(`unknown question ${String(m.op).slice(0, 40)}`));
      work.then(
        (value) => this.#send({ kind: 'answer', seq: m.seq, value: value ?? null }),
        (err: Error) => this.#send({ kind: 'answer', seq: m.seq, error: String(err?.message ?? err) }),
      );
      return;
    }
    if (m.kind === 'ready' || m.kind === 'failed' || m.kind === 'events') this.#onOther(m);
  }
}
