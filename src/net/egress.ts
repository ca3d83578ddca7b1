// Egress enforcement for one SBX_HOME: applies a sandbox's policy to the kernel, removes it, and
// opens the addresses that sbx's DNS forwarder learned for allowed names. The gateway owns the
// instance that learns; other processes (a library user without the daemon) apply the same rules
// and, on a policy change, simply drop what was learned (fail closed: the sandbox resolves again).
import { compilePolicy, DEFAULT_POLICY, nameAllowed, type CompiledPolicy, type NetworkPolicy } from '../core/network-policy.ts';
import { learnScript, removeScript, rulesScript, type EgressListeners, type LearnedAddress, type SandboxLink } from './nft-rules.ts';
import { runNft } from './nft.ts';
import { ipv6Subnet, objectNames, type SandboxRecord } from '../core/sandbox.ts';

/** What the rules of a sandbox are keyed on: all derived from its record, no engine call. */
function sandboxLink(record: Pick<SandboxRecord, 'id' | 'ipv6'>): SandboxLink {
  return { id: record.id, bridge: objectNames(record.id).bridge, ...(record.ipv6 ? { subnet6: ipv6Subnet(record.id) } : {}) };
}

/** DNS answers with a shorter TTL still open their address this long (a connect must follow). */
export const MIN_LEARN_SECONDS = 5;

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
   * Puts a sandbox's policy (its record's, or `policy` when given: an update) in force, atomically.
   * `changed`: the policy differs from the one in force, so addresses learned for names that are no
   * longer allowed are closed in the same step.
   */
  async apply(record: Pick<SandboxRecord, 'id' | 'name' | 'ipv6' | 'network'>, options: { policy?: NetworkPolicy; changed?: boolean } = {}): Promise<void> {
    const link = sandboxLink(record);
    const name = record.name;
    const compiled = this.compiled(link.id, options.policy ?? record.network);
    const relearn = options.changed ? this.#stillAllowed(link.id, compiled) : undefined;
    await runNft(rulesScript(link, compiled, { listeners: this.#fixed ?? this.#listeners(), relearn }), `could not put the egress policy of ${name} in force`);
    this.#appliedAt.set(link.id, Date.now());
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
    await runNft(removeScript(id), `could not remove the egress rules of sandbox ${id}`);
  }

  /** Opens the addresses of an allowed name's DNS answer for its TTL, before the answer is sent. */
  async learn(id: string, name: string, answers: LearnedAddress[]): Promise<void> {
    const now = Date.now();
    let known = this.#learned.get(id);
    if (!known) this.#learned.set(id, (known = new Map()));
    const fresh: LearnedAddress[] = [];
    for (const a of answers) {
      const ttl = Math.max(MIN_LEARN_SECONDS, a.ttl);
      const expiresAt = now + ttl * 1000;
      const entry = known.get(a.address);
      if (entry && entry.expiresAt > now) {
        entry.names.add(name);
        // Already open long enough: no kernel work on the DNS path.
        if (entry.expiresAt >= expiresAt - 1000) continue;
        entry.expiresAt = expiresAt;
      } else {
        known.set(a.address, { family: a.family, expiresAt, names: new Set([name]) });
      }
      fresh.push({ ...a, ttl });
    }
    if (fresh.length) await runNft(learnScript(id, fresh), `could not open the addresses of ${name}`);
  }

  #stillAllowed(id: string, compiled: CompiledPolicy): LearnedAddress[] {
    const known = this.#learned.get(id);
    if (!known) return [];
    const now = Date.now();
    const keep: LearnedAddress[] = [];
    for (const [address, entry] of known) {
      const names = [...entry.names].filter((n) => nameAllowed(compiled, n));
      if (entry.expiresAt <= now || names.length === 0) {
        known.delete(address);
        continue;
      }
      entry.names = new Set(names);
      keep.push({ address, family: entry.family, ttl: (entry.expiresAt - now) / 1000 });
    }
    return keep;
  }
}
