// Egress enforcement for one SBX_HOME: applies a sandbox's policy to the kernel, removes it, and
// opens the addresses that sbx's DNS forwarder learned for allowed names. The gateway owns the
// instance that learns; other processes (a library user without the daemon) apply the same rules
// and, on a policy change, simply drop what was learned (fail closed: the sandbox resolves again).
import { compilePolicy, DEFAULT_POLICY, learnedPorts, nameAllowed, type CompiledPolicy, type NetworkPolicy } from '../core/network-policy.ts';
import { learnScript, policyScripts, removeScript, sharedScript, type EgressListeners, type LearnedAddress, type SandboxLink } from './nft-rules.ts';
import { runNft } from './nft.ts';
import { KernelGate } from './kernel-gate.ts';
import { gatewayAccount } from './gateway-account.ts';
import { ipv6Subnet, objectNames, type SandboxRecord } from '../core/sandbox.ts';

/** What the rules of a sandbox are keyed on: all derived from its record, no engine call. */
function sandboxLink(record: Pick<SandboxRecord, 'id' | 'ipv6'>): SandboxLink {
  return { id: record.id, bridge: objectNames(record.id).bridge, ...(record.ipv6 ? { subnet6: ipv6Subnet(record.id) } : {}) };
}

/** DNS answers with a shorter TTL still open their address this long (a connect must follow). */
export const MIN_LEARN_SECONDS = 5;
/** And a longer TTL no longer than this: a stale answer cannot keep an address open for days. */
export const MAX_LEARN_SECONDS = 300;

interface Learned {
  family: 4 | 6;
  expiresAt: number;
  names: Set<string>;
}

export class Egress {
  readonly #listeners: () => EgressListeners | undefined;
  /** sandbox id -> address -> what opened it. */
  readonly #learned = new Map<string, Map<string, Learned>>();
  readonly #compiled = new Map<string, { json: string; compiled: CompiledPolicy }>();
  /** A policy being put in force (an update): judged by from its first step, before the kernel. */
  readonly #pending = new Map<string, CompiledPolicy>();
  /**
   * The shape of each sandbox's rules (policyScripts) as this process last put them in whole, kept
   * only once it fills (fillWhenUnchanged). Gone when the table may have lost them (deleted:
   * forgetLearned), when a run fails and on removal.
   */
  readonly #shapes = new Map<string, string>();
  #fillable = false;

  /**
   * From now on a change that keeps the shape of a sandbox's rules fills their sets only (the
   * gateway: the one writer that lasts). Other processes write whole scripts, which take the fill
   * marker away (see RulesOptions.fillable).
   */
  fillWhenUnchanged(): void {
    this.#fillable = true;
  }
  /** Kernel work per sandbox runs one step at a time: an update and a DNS answer never interleave. */
  readonly #queue = new Map<string, Promise<unknown>>();

  constructor(listeners: () => EgressListeners | undefined) {
    this.#listeners = listeners;
  }

  /** The gateway's own listeners, known before it announces itself (so it can repair first). */
  useListeners(listeners: EgressListeners): void {
    this.#fixed = listeners;
  }
  #fixed?: EgressListeners;

  /**
   * The compiled policy of a record (cached while it does not change). The DNS forwarder and the
   * proxy ask on every query and request: the same policy object answers at once; a re-read copy
   * (the store is re-read when it changes) is compared once, by its JSON.
   */
  compiled(id: string, policy: NetworkPolicy = DEFAULT_POLICY): CompiledPolicy {
    const same = this.#byObject.get(policy);
    if (same) return same;
    const json = JSON.stringify(policy);
    const hit = this.#compiled.get(id);
    const compiled = hit?.json === json ? hit.compiled : compilePolicy(policy);
    this.#compiled.set(id, { json, compiled });
    this.#byObject.set(policy, compiled);
    return compiled;
  }
  readonly #byObject = new WeakMap<NetworkPolicy, CompiledPolicy>();

  /**
   * What the DNS forwarder and the proxy judge a sandbox by: a policy being put in force wins
   * over the stored one until the store holds it too (an update tightens before it returns).
   */
  judgedBy(id: string, stored: NetworkPolicy | undefined): CompiledPolicy {
    const compiled = this.compiled(id, stored);
    const pending = this.#pending.get(id);
    if (!pending) return compiled;
    if (JSON.stringify(pending.policy) !== JSON.stringify(compiled.policy)) return pending;
    this.#pending.delete(id);
    return compiled;
  }

  /**
   * `listener` runs (and is awaited) whenever what judgedBy() answers changes outside the store:
   * an update becomes pending (before the kernel step), or a refused one stops being.
   */
  onJudgedChange(listener: () => Promise<void>): void {
    this.#onJudged = listener;
  }
  #onJudged?: () => Promise<void>;

  /** Per-sandbox steps side by side, or one restore run alone (kernel-gate.ts). */
  readonly #gate = new KernelGate();

  /** Runs kernel work for one sandbox after the work queued before it (and never during a restore run). */
  #serial<T>(id: string, work: () => Promise<T>): Promise<T> {
    const gated = async () => {
      await this.#gate.enter();
      try {
        return await work();
      } finally {
        this.#gate.leave();
      }
    };
    const run = (this.#queue.get(id) ?? Promise.resolve()).catch(() => {}).then(gated);
    const tail = run.catch(() => {});
    this.#queue.set(id, tail);
    void tail.then(() => this.#queue.get(id) === tail && this.#queue.delete(id));
    return run;
  }

  /**
   * Puts a sandbox's policy (its record's, or `policy` when given: an update) in force, atomically.
   * `changed`: the policy differs from the one in force. Then the DNS forwarder and the proxy judge
   * by it from this moment (before the kernel has it), and DNS-learned addresses are re-judged
   * under it in the same kernel step: nothing learned under the old policy outlives the update.
   * `olderTable`: an older sbx's table of the sandbox goes too (see RulesOptions).
   */
  async apply(record: Pick<SandboxRecord, 'id' | 'name' | 'ipv6' | 'network'>, options: { policy?: NetworkPolicy; changed?: boolean; olderTable?: boolean } = {}): Promise<void> {
    const link = sandboxLink(record);
    // Without a policy given, an update under way wins over the record (read before it was stored).
    const compiled = options.policy ? this.compiled(link.id, options.policy) : (this.#pending.get(link.id) ?? this.compiled(link.id, record.network));
    if (options.changed) this.#pending.set(link.id, compiled);
    try {
      // Whoever judges by it in another process (the gateway's egress worker) has it first.
      if (options.changed) await this.#onJudged?.();
      await this.#serial(link.id, async () => {
        const relearn = options.changed ? this.#stillAllowed(link.id, compiled) : undefined;
        const scripts = policyScripts(link, compiled, { listeners: this.#fixed ?? this.#listeners(), relearn, gatewayAccount: gatewayAccount(), olderTable: options.olderTable, fillable: this.#fillable });
        const what = `could not put the egress policy of ${record.name} in force`;
        // Rules of the shape this process put in last: filling the sets (and the dispatch entries,
        // should they have gone) is the whole change. A refusal means the kernel holds something
        // else: the whole script then.
        if (!options.olderTable && this.#shapes.get(link.id) === scripts.shape) {
          const filled = await runNft(scripts.fill, what).then(() => true, () => false);
          if (filled) return;
        }
        this.#shapes.delete(link.id);
        await runNft(scripts.full, what);
        if (this.#fillable) this.#shapes.set(link.id, scripts.shape);
      });
    } catch (err) {
      if (this.#pending.get(link.id) === compiled) {
        this.#pending.delete(link.id);
        await this.#onJudged?.();
      }
      throw err;
    }
    this.#appliedAt.set(link.id, Date.now());
  }

  /**
   * Puts the stored policies of many sandboxes in force again (a starting gateway: its listeners'
   * ports are new), several per nft run: each run reads the whole ruleset first, so one run per
   * sandbox would grow with their square. A run that fails is retried a sandbox at a time, so
   * one sandbox's refusal stays its own. `read` gives the records (the store), read again for
   * each run. Resolves with the errors, by sandbox id.
   */
  async restoreAll(read: () => ReadonlyArray<Pick<SandboxRecord, 'id' | 'name' | 'ipv6' | 'network' | 'creating' | 'removing'>>, options: { perRun?: number; creating?: boolean } = {}): Promise<Map<string, Error>> {
    const perRun = options.perRun ?? 200;
    const errors = new Map<string, Error>();
    // `creating`: creates under way applied their rules already (the table was deleted under
    // them); at a gateway's start such records are stale, and the reconciler rolls them back.
    const wanted = (r: Pick<SandboxRecord, 'creating' | 'removing'> | undefined) => !!r && !r.removing && (options.creating || !r.creating);
    const ids = read().map((r) => r.id);
    for (let i = 0; i < ids.length; i += perRun) {
      const ready = await this.#gate.alone(async () => {
        // Read once no step is under way, and written before the next: a policy changed meanwhile
        // is the one put back (an update's own, while the store does not hold it yet), a sandbox
        // removed meanwhile is not.
        const now = new Map(read().map((r) => [r.id, r]));
        const batch = ids.slice(i, i + perRun).map((id) => now.get(id)).filter(wanted) as Array<Pick<SandboxRecord, 'id' | 'name' | 'ipv6' | 'network'>>;
        const listeners = this.#fixed ?? this.#listeners();
        const scripts: string[] = [];
        const shapes: string[] = [];
        const done: typeof batch = [];
        for (const r of batch) {
          try {
            const compiled = this.#pending.get(r.id) ?? this.compiled(r.id, r.network);
            // The shared part once per run, with the first sandbox's rules.
            const { full, shape } = policyScripts(sandboxLink(r), compiled, { listeners, gatewayAccount: gatewayAccount(), shared: scripts.length === 0, olderTable: true, fillable: this.#fillable });
            scripts.push(full);
            shapes.push(shape);
            done.push(r);
          } catch (err) {
            errors.set(r.id, err as Error); // a policy that no longer compiles is that sandbox's alone
          }
        }
        if (done.length === 0) return { done, again: false };
        for (const r of done) this.#shapes.delete(r.id);
        try {
          await runNft(scripts.join('\n'), 'could not put the egress policies back in force');
          if (this.#fillable) done.forEach((r, j) => this.#shapes.set(r.id, shapes[j]!));
          for (const r of done) this.#appliedAt.set(r.id, Date.now());
          // The listeners moved while the run was on its way (the worker restarted): not the old ports.
          return { done, again: JSON.stringify(this.#fixed ?? this.#listeners()) !== JSON.stringify(listeners) };
        } catch {
          return { done, again: true };
        }
      });
      // One at a time, as steps of their own (an update under way wins: see apply).
      if (ready.again) {
        const latest = new Map(read().map((r) => [r.id, r]));
        for (const r of ready.done) {
          const now = latest.get(r.id);
          if (wanted(now)) await this.apply(now!, { olderTable: true }).catch((err: Error) => errors.set(r.id, err));
        }
      }
    }
    return errors;
  }

  /**
   * The shared part alone: after the table was deleted, it refuses every sandbox bridge until
   * that sandbox's rules are back (restoreAll), rather than let them all through meanwhile.
   */
  restoreSkeleton(): Promise<void> {
    return runNft(sharedScript().join('\n') + '\n', 'could not put the shared egress rules back');
  }

  /**
   * The table was deleted: no DNS-learned address is open any more (the next answer opens it
   * again), and no sandbox's rules have the shape this process wrote (the next apply is whole).
   */
  forgetLearned(): void {
    this.#learned.clear();
    this.#shapes.clear();
  }

  /**
   * For the first container start after this process applied a sandbox's rules (within `ms`):
   * true, so that start needs no repair. Each apply answers once.
   */
  takeFreshApply(id: string, ms: number): boolean {
    const at = this.#appliedAt.get(id);
    this.#appliedAt.delete(id);
    return at !== undefined && Date.now() - at < ms;
  }
  readonly #appliedAt = new Map<string, number>();

  async remove(id: string): Promise<void> {
    this.#learned.delete(id);
    this.#appliedAt.delete(id);
    this.#compiled.delete(id);
    this.#pending.delete(id);
    await this.#serial(id, async () => {
      this.#shapes.delete(id); // (an apply queued before this one may have noted it)
      await runNft(removeScript(sandboxLink({ id })), `could not remove the egress rules of sandbox ${id}`);
    });
  }

  /**
   * Opens the addresses of a DNS answer for `name:port` entries, on exactly their ports, for the
   * answer's TTL (within MIN/MAX_LEARN_SECONDS), before the answer is sent. `judge` is the policy
   * the sandbox is judged by when the kernel step runs (an update may have come in meanwhile).
   * Resolves with false when that policy opens no port for the name.
   */
  learn(id: string, name: string, answers: ReadonlyArray<Omit<LearnedAddress, 'ports'>>, judge: () => CompiledPolicy | undefined): Promise<boolean> {
    return this.#serial(id, async () => {
      const policy = judge();
      if (!policy || !nameAllowed(policy, name)) return false;
      const ports = learnedPorts(policy, name);
      if (ports.length === 0) return true; // a plain name: the proxy judges 80/443 by name
      const now = Date.now();
      let known = this.#learned.get(id);
      if (!known) this.#learned.set(id, (known = new Map()));
      const fresh: LearnedAddress[] = [];
      for (const a of answers) {
        const ttl = Math.min(MAX_LEARN_SECONDS, Math.max(MIN_LEARN_SECONDS, a.ttl));
        const expiresAt = now + ttl * 1000;
        const entry = known.get(a.address);
        if (entry && entry.expiresAt > now) {
          const hadName = entry.names.has(name);
          entry.names.add(name);
          // Already open long enough for this name: no kernel work on the DNS path.
          if (hadName && entry.expiresAt >= expiresAt - 1000) continue;
          entry.expiresAt = Math.max(entry.expiresAt, expiresAt);
        } else {
          known.set(a.address, { family: a.family, expiresAt, names: new Set([name]) });
        }
        fresh.push({ ...a, ttl, ports });
      }
      if (fresh.length) {
        try {
          await runNft(learnScript(id, fresh), `could not open the addresses of ${name}`);
        } catch (err) {
          // Not open after all: the next answer for them does the kernel step again.
          for (const a of fresh) known.delete(a.address);
          throw err;
        }
      }
      return true;
    });
  }

  #stillAllowed(id: string, compiled: CompiledPolicy): LearnedAddress[] {
    const known = this.#learned.get(id);
    if (!known) return [];
    const now = Date.now();
    const keep: LearnedAddress[] = [];
    for (const [address, entry] of known) {
      const names = [...entry.names].filter((n) => learnedPorts(compiled, n).length > 0);
      if (entry.expiresAt <= now || names.length === 0) {
        known.delete(address);
        continue;
      }
      entry.names = new Set(names);
      const ports = names.flatMap((n) => learnedPorts(compiled, n));
      keep.push({ address, family: entry.family, ttl: (entry.expiresAt - now) / 1000, ports });
    }
    return keep;
  }
}
