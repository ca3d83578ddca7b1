// The local backend of the library: it validates, writes desired state to the store, and asks
// the reconciler to make the world match. It runs where the privileged work is done: in the
// daemon (the gateway on the host, or the agent container), and in host mode in the CLI itself
// (which hands changes to the running daemon). The public facade is Sbx (sbx.ts).
import { readFileSync } from 'node:fs';
import type { Readable, Writable } from 'node:stream';
import type { GatewayStatus } from '../gateway/state.ts';
import { InterruptedError, NotFoundError, RemovalError, RuntimeError, SbxError, UsageError, withWarning } from '../core/errors.ts';
import { generateName, newId, validateName } from '../core/names.ts';
import { checkCpus, DEFAULT_PIDS_LIMIT, parseCpus, parseMemory, parsePidsLimit, toEnv, validateImage } from '../core/options.ts';
import { resolveSandbox } from '../core/resolve.ts';
import { objectNames, type SandboxInfo, type SandboxRecord, type SandboxStatus } from '../core/sandbox.ts';
import type { ContainerSummary, Runtime } from '../runtime/docker.ts';
import { Store } from '../store/store.ts';
import { sbxHome } from '../store/home.ts';
import { beingRemoved, claimStale, reconcileSandbox, reconcileStale, recordState, removeSandbox } from './reconcile.ts';
import { thisProcess } from '../store/process-ref.ts';
import { parseCustomDomain, parsePorts, portInfos, validateMaskHost, type GatewayAddress, type PortInfo } from '../core/ports.ts';
import { parseDuration } from '../core/duration.ts';
import { newToken } from '../core/token.ts';
import { gatewaySettings } from '../gateway/settings.ts';
import { runningGateway } from '../gateway/state.ts';
import { readServedCertificate } from './served-certificate-read.ts';
import type { Operation } from '../daemon-client/protocol.ts';
import { sandboxLabels } from '../runtime/labels.ts';
import type { NetworkPolicy, NetworkPolicyInput } from '../core/network-policy.ts';
import type { NetworkLogEntry, NetworkLogQuery } from '../core/network-log.ts';
import type { NetworkCheck } from './network-check.ts';
import type { CaInfo } from './ca.ts';
import { copyPolicy, DEFAULT_POLICY } from '../core/sandbox.ts';

/** The policy parser (and its address maths), loaded by the commands that take a policy only. */
const policies = () => import('../core/network-policy.ts');
import type { Egress } from '../net/egress.ts';
import { checkCommand, execInSandbox, type ExecSandboxOptions } from './exec.ts';
import { createPlannedNetwork } from './address-plan.ts';
import { subnetPool } from '../core/subnet-pool.ts';
import { parsePoolSize, unclaimableReason, type PoolStatus } from '../core/pool.ts';
import { PooledSandboxGone, WarmPool } from './pool.ts';
export type { ExecSandboxOptions } from './exec.ts';

export const DEFAULT_IMAGE = 'sbx/base:bookworm';

/**
 * What a failed create throws after its rollback: Ctrl-C says so, and what the rollback could not
 * remove stays recorded (status removing) and is told.
 */
function createFailure(err: unknown, left: Error | undefined, signal?: AbortSignal): unknown {
  const failure = signal?.aborted ? new InterruptedError(`interrupted: the sandbox was not created${left ? '' : ' and nothing was left behind'}`) : err;
  return left ? withWarning(failure, left.message) : failure;
}

/** No policy asked for: no mode and no entries (the CLI passes empty lists without flags). */
function defaultPolicyInput(input: NetworkPolicyInput | undefined): boolean {
  if (!input) return true;
  return input.mode === undefined && (['allowOut', 'denyOut', 'allowPorts', 'denyPorts'] as const).every((k) => !input[k] || (Array.isArray(input[k]) && input[k].length === 0));
}

export interface CreateSandboxOptions {
  name?: string;
  image?: string;
  /** KEY=VALUE strings or an object. */
  env?: readonly string[] | Record<string, string>;
  /** "512m", "1g" or bytes. */
  memory?: string | number;
  /** "1.5" or 1.5 CPUs. */
  cpus?: string | number;
  /** Most processes (threads count) at once, 16 to 4194304; default 1024. */
  pidsLimit?: string | number;
  /** Main command; omitted, the sandbox idles until stopped. */
  command?: string[];
  /** Ports to expose behind URLs at once. */
  ports?: ReadonlyArray<number | string>;
  /** Make the ports private: requests need the sandbox's traffic token. */
  private?: boolean;
  /** Host header sent into the sandbox, with ${PORT} replaced, e.g. "localhost:${PORT}". */
  maskHost?: string;
  /** Time to live ("30s", "10m", "2h"): the gateway removes the sandbox when it is up. */
  ttl?: string;
  /** Give the sandbox IPv6 too (its own unique-local /64); the egress policy covers both. */
  ipv6?: boolean;
  /** The outbound policy (default allow-all); invalid entries fail the create before anything exists. */
  network?: NetworkPolicyInput;
  /** Aborting rolls the create back: no container, network or store entry is left. */
  signal?: AbortSignal;
  /** Progress lines (image pulls). */
  onProgress?: (line: string) => void;
}

export interface RemoveResult {
  id: string;
  name: string;
  removed: boolean;
}

export interface LocalSbxOptions {
  /** Where state lives; defaults to $SBX_HOME or the XDG config dir. */
  home?: string;
  runtime?: Runtime;
  /**
   * Let the running daemon (the gateway) carry out create and rm (default: yes, unless a runtime
   * is given). The daemon itself runs with this off.
   */
  delegate?: boolean;
  /** Egress enforcement; the gateway passes the one that also learns DNS answers. */
  egress?: Egress;
}

/** How long `ls` and `inspect` wait for the daemon before they ask the engine themselves. */
const READ_TIMEOUT_MS = 5000;

/** What Docker says of containers, by name (undefined: there is none); the daemon's is kept from events. */
export interface ContainerSource {
  states(names: string[]): Promise<ReadonlyMap<string, ContainerSummary | undefined>>;
}

export class LocalSbx {
  readonly home: string;
  readonly store: Store;
  #runtime?: Runtime;
  #containerView?: ContainerSource;
  readonly #delegate: boolean;
  #egress?: Egress;
  /** The warm pool (pool.ts); the daemon refills it. */
  readonly pool: WarmPool;

  constructor(options: LocalSbxOptions = {}) {
    this.home = options.home ?? sbxHome();
    this.store = new Store(this.home);
    this.#runtime = options.runtime;
    this.#delegate = options.delegate ?? !options.runtime;
    this.#egress = options.egress;
    this.pool = new WarmPool(this.store, DEFAULT_IMAGE);
  }

  /** Egress enforcement, loaded on first use; listeners come from this home's running gateway. */
  async egress(): Promise<Egress> {
    if (!this.#egress) {
      const { Egress } = await import('../net/egress.ts');
      this.#egress = new Egress(() => runningGateway(this.home)?.egress);
    }
    return this.#egress;
  }

  async #world(signal?: AbortSignal) {
    return { runtime: await this.runtime(), home: this.home, egress: await this.egress(), signal, store: this.store };
  }

  /** The daemon's control socket, when one runs for this home and talks to the same engine. */
  #daemon(): string | undefined {
    if (!this.#delegate) return undefined;
    const s = runningGateway(this.home);
    if (!s?.control || (s.dockerHost ?? '') !== (process.env.DOCKER_HOST ?? '')) return undefined;
    return s.control;
  }

  /**
   * Runs `op` in the daemon when one runs; `direct` otherwise (or when it cannot be reached). A
   * daemon of another control protocol (sbx was upgraded under it) is replaced by this sbx's own
   * first: rules stay in the kernel while the gateway restarts.
   */
  async #viaDaemon<T>(op: Operation, payload: object, signal: AbortSignal | undefined, direct: () => Promise<T>, read = false): Promise<T> {
    const { DaemonClient, unixTransport, MismatchError } = await import('../daemon-client/client.ts');
    const { PROTOCOL_VERSION } = await import('../daemon-client/protocol.ts');
    for (let attempt = 0; ; attempt++) {
      const control = this.#daemon();
      if (!control) return direct();
      try {
        if (runningGateway(this.home)?.protocol !== PROTOCOL_VERSION) throw new MismatchError(runningGateway(this.home)?.protocol ?? 1);
        return await new DaemonClient(unixTransport(control)).request<T>(op, payload as Record<string, unknown>, { signal, ...(read ? { timeoutMs: READ_TIMEOUT_MS } : {}) });
      } catch (err) {
        const failed = err as { unreachable?: boolean; timedOut?: boolean; code?: string };
        if (failed.unreachable) return direct();
        // A daemon that does not answer a read in time (stuck, or busy with a burst), or whose
        // socket fails: the engine is asked.
        if (read && (failed.timedOut || failed.code)) return direct();
        if (!(err instanceof MismatchError) || attempt > 0) throw err;
        // A read does not replace a daemon of another protocol: it asks the engine itself.
        if (read) return direct();
        const { stopGateway } = await import('../gateway/daemon.ts');
        await stopGateway(this.home);
        await this.ensureGateway();
      }
    }
  }

  /** The engine client, loaded on first use so that commands that do not need it start fast. */
  async runtime(): Promise<Runtime> {
    if (!this.#runtime) {
      const { Runtime } = await import('../runtime/docker.ts');
      this.#runtime = new Runtime();
    }
    return this.#runtime;
  }

  // ---- create ---------------------------------------------------------------------------

  async create(options: CreateSandboxOptions = {}): Promise<SandboxInfo> {
    const { signal, onProgress, ...plain } = options;
    // Bad entries fail here, before any daemon or engine work (the policy parser's address maths
    // costs a warm-pool create a tenth of its time: not loaded for the default policy).
    if (!defaultPolicyInput(options.network)) (await policies()).normalizePolicy(options.network);
    if (process.env.SBX_SUBNET_POOL?.trim()) subnetPool(); // and a bad SBX_SUBNET_POOL (the default is checked by a unit test)
    // A limit above the engine's CPUs would reach Docker and fail in its words: refuse it here.
    if (options.cpus !== undefined) checkCpus(parseCpus(options.cpus), await (await this.runtime()).cpuCount());
    if (await this.#upstreamChanged()) await this.ensureGateway();
    return this.#viaDaemon('create', { options: plain }, signal, () => this.#create(options));
  }

  async #create(options: CreateSandboxOptions): Promise<SandboxInfo> {
    const record: SandboxRecord = {
      id: newId(),
      name: options.name === undefined ? generateName() : validateName(options.name),
      image: validateImage(options.image ?? DEFAULT_IMAGE),
      createdAt: new Date().toISOString(),
      command: [...(options.command ?? [])],
      env: toEnv(options.env),
      memory: parseMemory(options.memory),
      cpus: parseCpus(options.cpus),
      pidsLimit: parsePidsLimit(options.pidsLimit),
      desired: 'running',
      creating: true,
      creator: thisProcess(),
      ports: parsePorts(options.ports ?? []).map((port) => ({ port, public: !options.private })),
      token: newToken(),
      ...(options.maskHost !== undefined ? { maskHost: validateMaskHost(options.maskHost) } : {}),
      ...(options.ttl !== undefined ? { expiresAt: new Date(Date.now() + parseDuration(options.ttl)).toISOString() } : {}),
      network: (await policies()).normalizePolicy(options.network),
      ...(options.ipv6 ? { ipv6: true } : {}),
    };
    // The gateway serves every sandbox (DNS, egress proxy; ports and TTLs): running before it exists.
    const needsGateway = record.ports!.length > 0 || !!record.expiresAt;
    await this.ensureGateway();
    // The common shape takes a running sandbox from the warm pool when one is ready.
    if (!unclaimableReason(options, DEFAULT_IMAGE)) {
      const claimed = await this.#claim(record, needsGateway, options.signal);
      if (claimed) return claimed;
    }
    const world = await this.#world(options.signal);
    const runtime = world.runtime;
    // The engine takes ~80 ms to make a network: start it while the image is checked and the
    // name reserved. Any failure from here on undoes everything (rollback is idempotent).
    const network = createPlannedNetwork(runtime, record.id, sandboxLabels(record.id, record.name, this.home), !!record.ipv6, this.store, options.signal).then(
      () => undefined,
      (err: unknown) => err,
    );
    // The egress rules go in meanwhile (keyed on the bridge's name, they need no network yet).
    const rules = world.egress.apply(record).then(
      () => undefined,
      (err: unknown) => err,
    );
    // Let the request reach the engine before the CPU-bound store work below (loading conf).
    await new Promise((resolve) => setImmediate(resolve));
    try {
      await Promise.all([
        this.#ensureImage(runtime, record.image, options.onProgress),
        this.#reserveName(record, world),
      ]);
      const networkError = (await network) ?? (await rules);
      if (networkError) throw networkError;
      if (options.signal?.aborted) throw new InterruptedError('interrupted');
      await reconcileSandbox(record, { ...world, fresh: true, rulesApplied: true });
      await this.#markCreated(record);
      if (needsGateway) await this.#routesChanged([record.id]);
    } catch (err) {
      await network;
      // nft applies a script all or nothing, and the id is new: rules that failed to go in left no table.
      const rulesFailed = (await rules) !== undefined;
      throw createFailure(err, await this.#rollbackCreate(record, !rulesFailed), options.signal);
    }
    const withToken = record.ports!.some((p) => !p.public);
    return this.#info(record, await runtime.inspectContainer(objectNames(record.id).container), withToken);
  }

  /**
   * A create from the warm pool (pool.ts): the record takes a ready pooled sandbox's id, then its
   * policy and limits are applied to the running container. Undefined when none is ready (or the
   * name is held: the plain create reports or finishes it). A failure or Ctrl-C removes the taken
   * sandbox for good, as a create's rollback does; one whose container no longer ran is removed
   * and the next is tried.
   */
  async #claim(draft: SandboxRecord, needsGateway: boolean, signal?: AbortSignal): Promise<SandboxInfo | undefined> {
    const tried = new Set<string>();
    const began = Date.now();
    for (;;) {
      const record = await this.pool.take(draft, tried);
      if (!record) return undefined;
      tried.add(record.id);
      const world = { ...(await this.#world(signal)), store: this.store };
      try {
        const container = await this.pool.prepare(record, world);
        if (signal?.aborted) throw new InterruptedError('interrupted');
        if (needsGateway) await this.#routesChanged([record.id]);
        await this.#markCreated(record);
        this.pool.onLine(`pool: ${record.name} claimed pooled sandbox ${record.id} in ${Date.now() - began} ms`);
        return this.#info(record, container, record.ports!.some((p) => !p.public));
      } catch (err) {
        const left = await this.#rollbackCreate(record, true);
        if (err instanceof PooledSandboxGone && !left) continue;
        throw createFailure(err, left, signal);
      }
    }
  }

  /** A create is finished: its record, stored and in hand, is no longer being created (nor hidden). */
  async #markCreated(record: SandboxRecord): Promise<void> {
    await this.store.update((data) => {
      const stored = data.sandboxes[record.id];
      if (stored) {
        delete stored.creating;
        delete stored.creator;
      }
    });
    delete record.creating;
    delete record.creator;
  }

  // ---- warm pool --------------------------------------------------------------------------

  /** How many pooled sandboxes to keep running (0: off); kept in the store, refilled by the daemon. */
  async setPool(size: number | string): Promise<PoolStatus> {
    const n = parsePoolSize(size);
    if (n > 0) await this.ensureGateway(); // the daemon fills the pool
    return this.#viaDaemon('call', { method: 'setPool', args: [n] }, undefined, async () => {
      const status = await this.pool.set(n, { ...(await this.#world()), store: this.store });
      if (!this.#delegate) void this.refillPool();
      return status;
    });
  }

  /** The pool's size and how many pooled sandboxes are ready, being made or removed (a store read). */
  poolStatus(): PoolStatus {
    return this.pool.status();
  }

  /** Makes pooled sandboxes until the pool has its size (the daemon calls it; failures are logged). */
  refillPool(): Promise<void> {
    return this.pool.fill(async () => ({ ...(await this.#world()), store: this.store })).catch((err: Error) => this.pool.onLine(`pool: ${err.message}`));
  }

  async #ensureImage(runtime: Runtime, image: string, onProgress?: (line: string) => void): Promise<void> {
    if (await runtime.imageExists(image)) return;
    if (image === DEFAULT_IMAGE) {
      throw new RuntimeError(`the default image ${DEFAULT_IMAGE} is not built yet: run sbx image build (or ./scripts/setup)`);
    }
    await runtime.pullImage(image, onProgress);
  }

  /**
   * Takes the name for a new record under the store lock. A record of that name that is stale (its
   * create or removal was killed, or a removal gave up) is finished first: its objects are removed,
   * then the name is free; one that another live process is removing is waited for.
   */
  async #reserveName(record: SandboxRecord, world: { runtime: Runtime; egress: Egress; home: string }): Promise<void> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const other = await this.store.update((data, view) => {
        // Looked up in the frozen view: only the records of this name are copied to change.
        const same = view.sandboxes.filter((r) => r.name === record.name && r.id !== record.id).map((r) => data.sandboxes[r.id]!);
        for (const r of same) {
          const state = recordState(r);
          if (state === 'ready') throw new UsageError(`a sandbox named "${record.name}" already exists: pick another --name or remove it first`);
          if (state === 'creating') throw new UsageError(`a sandbox named "${record.name}" already exists (sbx process ${r.creator?.pid ?? '?'} is creating it): pick another --name`);
        }
        const stale = same.find(claimStale);
        if (stale) return { record: structuredClone(stale), claimed: true };
        if (same[0]) return { record: same[0], claimed: false };
        data.sandboxes[record.id] = record;
        return undefined;
      });
      if (!other) return;
      if (other.claimed) {
        await removeSandbox(other.record, { ...world, store: this.store }, { claimed: true }).catch((err: RemovalError) => {
          throw new RemovalError(`the name "${record.name}" is still held by an unfinished sandbox: ${err.message}`, err.sandbox, err.left, { cause: err });
        });
        continue;
      }
      if (Date.now() > deadline) {
        throw new RuntimeError(`a sandbox named "${record.name}" is still being removed by another sbx process (pid ${other.record.removing?.by?.pid ?? 'unknown'}): retry once sbx ls no longer lists it`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Undoes a failed create; resolves with what could not be removed (it stays recorded), if anything. */
  async #rollbackCreate(record: SandboxRecord, rules: boolean): Promise<RemovalError | undefined> {
    try {
      await removeSandbox(record, { ...(await this.#world()), store: this.store }, { recordIfAbsent: true, rules });
      return undefined;
    } catch (err) {
      if (err instanceof RemovalError) return err;
      return new RemovalError(`could not roll back sandbox ${record.name} (${(err as Error).message})`, { id: record.id, name: record.name }, [], { cause: err });
    }
  }

  /**
   * Rolls back creates whose process is gone (killed mid-create) and retries removals that did not
   * finish. The gateway does this when it starts; a create meets such a record of its own name.
   */
  async reconcileStale(onLine: (line: string) => void = () => {}): Promise<void> {
    try {
      const world = { ...(await this.#world()), store: this.store };
      await reconcileStale(world, onLine);
      await this.pool.reconcile(world, (line) => onLine(`pool: ${line}`));
    } catch (err) {
      onLine(`could not look for unfinished creates and removals: ${(err as Error).message}`);
    }
  }

  // ---- read -----------------------------------------------------------------------------

  /**
   * The daemon's view of the containers (container-view.ts), kept from Docker's events: `list`
   * and `get` read it instead of asking Docker each time. Only the daemon sets it; a client asks
   * the daemon when one runs.
   */
  useContainerView(view: ContainerSource): void {
    this.#containerView = view;
  }

  async list(): Promise<SandboxInfo[]> {
    return this.#viaDaemon('call', { method: 'list', args: [] }, undefined, async () => {
      const records = this.store.sandboxes().filter((r) => !r.creating);
      if (records.length === 0) return [];
      const names = records.map((r) => objectNames(r.id).container);
      const containers = this.#containerView ? await this.#containerView.states(names) : await (await this.runtime()).listSandboxContainers(this.home);
      const gw = this.gatewayAddress();
      return records.map((r, i) => this.#info(r, containers.get(names[i]!), false, gw));
    }, true);
  }

  async get(ref: string, options: { showToken?: boolean } = {}): Promise<SandboxInfo> {
    return this.#viaDaemon('call', { method: 'get', args: [ref, options] }, undefined, async () => {
      const record = this.resolve(ref);
      const name = objectNames(record.id).container;
      const container = this.#containerView ? (await this.#containerView.states([name])).get(name) : await (await this.runtime()).inspectContainer(name);
      return this.#info(record, container, options.showToken);
    }, true);
  }

  /** The names of the sandboxes (shell completion; no engine call). */
  sandboxNames(): string[] {
    return this.store.sandboxes().filter((r) => !r.creating).map((r) => r.name);
  }

  /** What `exec` needs to reach a sandbox through the engine: its container, checked to be running. */
  async execTarget(ref: string): Promise<{ id: string; name: string; container: string; env?: Record<string, string> }> {
    const record = this.resolve(ref);
    const container = objectNames(record.id).container;
    const state = await (await this.runtime()).inspectContainer(container);
    if (!state) throw new RuntimeError(`sandbox ${record.name} is missing its container: sbx rm it and create it again`);
    if (state.state !== 'running') {
      throw new RuntimeError(`sandbox ${record.name} is ${state.state}: sbx ${state.state === 'paused' ? 'resume' : 'start'} it first`);
    }
    // A sandbox from the pool ran before it had its env: every exec gets it.
    return { id: record.id, name: record.name, container, ...(record.pooled && Object.keys(record.env).length ? { env: record.env } : {}) };
  }

  /** Finds a sandbox by name, id or unique id prefix in the store (no engine call). */
  resolve(ref: string): SandboxRecord {
    return resolveSandbox(ref, this.store.sandboxes());
  }

  /**
   * A sandbox that does not exist starts no gateway: looked up before a start. Not when a gateway
   * runs: the change itself looks it up (in the daemon), and one store read fewer counts with a
   * thousand sandboxes.
   */
  #existsBeforeStart(ref: string): void {
    if (!runningGateway(this.home)) this.resolve(ref);
  }

  /** Read-modify-write of one sandbox's record under the store lock. */
  #updateSandbox<T>(ref: string, change: (r: SandboxRecord) => T): Promise<T> {
    return this.store.update((data, view) => change(data.sandboxes[this.#notRemoving(resolveSandbox(ref, view.sandboxes)).id]!));
  }

  /** A sandbox whose removal began is not changed (nor brought back): sbx rm finishes it. */
  #notRemoving(r: SandboxRecord): SandboxRecord {
    if (r.removing) throw beingRemoved(r);
    return r;
  }

  #info(r: SandboxRecord, c: ContainerSummary | undefined, showToken = false, gw = this.gatewayAddress()): SandboxInfo {
    const names = objectNames(r.id);
    const status: SandboxStatus = r.removing ? 'removing' : c ? c.state : 'missing';
    return {
      id: r.id,
      name: r.name,
      image: r.image,
      status,
      createdAt: r.createdAt,
      // Copies: the record is the store's frozen snapshot; what is handed out is the caller's.
      command: [...r.command],
      env: { ...r.env },
      memory: r.memory,
      cpus: r.cpus,
      pidsLimit: r.pidsLimit ?? DEFAULT_PIDS_LIMIT,
      ...(status === 'running' && c?.ip ? { ip: c.ip } : {}),
      ...(status === 'running' && c?.ip6 ? { ip6: c.ip6 } : {}),
      bridge: names.bridge,
      container: names.container,
      dockerNetwork: names.network,
      ports: portInfos(r.name, r.ports ?? [], gw),
      network: copyPolicy(r.network ?? DEFAULT_POLICY),
      ...(r.maskHost ? { maskHost: r.maskHost } : {}),
      ...(r.expiresAt ? { expiresAt: r.expiresAt } : {}),
      ...(showToken && r.token ? { token: r.token } : {}),
      ...(r.removing ? { removing: { left: r.removing.left ?? [], ...(r.removing.error ? { error: r.removing.error } : {}) } } : {}),
      ...(r.pooled ? { pooled: true } : {}),
    };
  }

  // ---- gateway and ports ----------------------------------------------------------------

  /** Where URLs point: the running gateway, else the configured one. */
  gatewayAddress(): GatewayAddress {
    const running = runningGateway(this.home);
    if (running) return { domain: running.domain, port: running.port, ...(running.tls ? { tls: true } : {}) };
    const s = gatewaySettings();
    return { domain: s.domain, port: s.port, ...(s.tls ? { tls: true } : {}) };
  }

  /**
   * After a change that affects routing: the running gateway has it in force when this resolves.
   * `changed`: sandboxes whose containers this started, stopped or made (Docker is asked again).
   */
  async #routesChanged(changed: string[] = [], options: { policiesOnly?: boolean; portsOnly?: boolean } = {}): Promise<void> {
    const running = runningGateway(this.home);
    if (!running) return;
    const { reloadGateway } = await import('../gateway/daemon.ts');
    // Only policies changed, in the gateway itself: its egress worker has them already (apply).
    // Only ports changed, in the gateway itself: no sandbox, address or policy did, so only the
    // routes are read again (with a thousand sandboxes, the egress worker's re-judging of every
    // policy is work for nothing). From another process, the gateway re-reads everything.
    const here = running.pid === process.pid;
    await reloadGateway(running, changed, { policiesOnly: options.policiesOnly && here, portsOnly: options.portsOnly && here });
  }

  /**
   * This home's sbx CA for the gateway's domain, made on first use, with its certificate's text
   * (an agent's client keeps a copy of it); its key stays where it is.
   */
  async ca(): Promise<CaInfo & { pem: string }> {
    const { ensureCa } = await import('./ca.ts');
    const info = await ensureCa(this.home, gatewaySettings().domain);
    return { ...info, pem: readFileSync(info.path, 'utf8') };
  }

  /** Whether this SBX_HOME's gateway runs, and where (no network call). */
  async gatewayStatus(): Promise<GatewayStatus> {
    const { gatewayStatus } = await import('../gateway/state.ts');
    return gatewayStatus(this.home);
  }

  /** Stops this SBX_HOME's background gateway; resolves true when one was running. */
  async stopGateway(): Promise<boolean> {
    const { stopGateway } = await import('../gateway/daemon.ts');
    return stopGateway(this.home);
  }

  /** Starts the background gateway of this SBX_HOME unless it runs. */
  async ensureGateway() {
    const [{ ensureGateway, stopGateway }, { startGateway }] = await Promise.all([import('../gateway/daemon.ts'), import('./gateway-start.ts')]);
    if (await this.#upstreamChanged()) await stopGateway(this.home);
    return startGateway(this.home, (home) => ensureGateway(home));
  }

  /**
   * SBX_DNS_UPSTREAM is read when the gateway starts: a command run with another one restarts the
   * gateway (rules stay in force meanwhile), so the upstream asked for is the one in use.
   */
  async #upstreamChanged(): Promise<boolean> {
    if (!process.env.SBX_DNS_UPSTREAM) return false;
    const running = runningGateway(this.home);
    if (!running?.dnsUpstream || running.pid === process.pid) return false;
    const { dnsUpstream } = await import('../gateway/settings.ts');
    const wanted = dnsUpstream();
    return `${wanted.host}:${wanted.port}` !== running.dnsUpstream;
  }

  /**
   * Exposes ports (idempotent; changes public/private of ports already exposed). `domain`: a name
   * of the user's own that routes to the one port given, too (kept when the port is exposed again
   * without one).
   */
  async exposePorts(ref: string, ports: ReadonlyArray<number | string>, options: { public?: boolean; domain?: string } = {}): Promise<PortInfo[]> {
    const wanted = parsePorts(ports);
    if (wanted.length === 0) throw new UsageError('no port given: sbx port expose SANDBOX PORT...');
    if (options.domain !== undefined && typeof options.domain !== 'string') throw new UsageError('invalid domain: give a DNS name as a string');
    const domain = options.domain === undefined ? undefined : parseCustomDomain(options.domain, this.gatewayAddress().domain);
    if (domain && wanted.length > 1) throw new UsageError(`--domain names one port: got ${wanted.length} (${wanted.join(', ')})`);
    return this.#viaDaemon('expose', { ref, ports: wanted, public: options.public, ...(domain ? { domain } : {}) }, undefined, () => this.#exposePorts(ref, wanted, { ...options, domain }));
  }

  async #exposePorts(ref: string, wanted: number[], options: { public?: boolean; domain?: string }): Promise<PortInfo[]> {
    const isPublic = options.public ?? true;
    const { domain } = options;
    this.#existsBeforeStart(ref);
    await this.ensureGateway();
    if (domain) {
      this.resolve(ref); // no such sandbox: exit 3 before anything else is said
      this.#servedOverTls(domain);
    }
    const record = await this.store.update((data, view) => {
      const r = data.sandboxes[this.#notRemoving(resolveSandbox(ref, view.sandboxes)).id]!;
      if (domain) {
        const holder = view.sandboxes.find((o) => o.ports?.some((p) => p.domain === domain && !(o.id === r.id && p.port === wanted[0])));
        if (holder) {
          const port = holder.ports!.find((p) => p.domain === domain)!.port;
          throw new UsageError(`domain ${domain} already routes to port ${port} of sandbox ${holder.name}: ${holder.removing ? `that sandbox is being removed (sbx rm --force ${holder.name})` : `sbx port rm ${holder.name} ${port} first`}`);
        }
      }
      const current = new Map((r.ports ?? []).map((p) => [p.port, p]));
      for (const port of wanted) {
        const kept = domain ?? current.get(port)?.domain;
        current.set(port, { port, public: isPublic, ...(kept ? { domain: kept } : {}) });
      }
      r.ports = [...current.values()].sort((a, b) => a.port - b.port);
      r.token ??= newToken();
      return r;
    });
    await this.#routesChanged([], { portsOnly: true });
    return portInfos(record.name, wanted.map((port) => record.ports!.find((p) => p.port === port)!), this.gatewayAddress());
  }

  /** On an HTTPS gateway, a name its certificate does not cover would only ever fail the handshake. */
  #servedOverTls(domain: string): void {
    let gw = runningGateway(this.home);
    if (!gw?.tls) return;
    let covered = false;
    try {
      // gateway.json read again when its copy was swapped away meanwhile (a renewal).
      const served = readServedCertificate(() => (gw = runningGateway(this.home) ?? gw));
      // node:crypto only here: loading it costs every command's start about 6 ms.
      const { X509Certificate } = process.getBuiltinModule('node:crypto') as typeof import('node:crypto');
      covered = !!served && !!new X509Certificate(served.pem).checkHost(domain);
    } catch (err) {
      throw new RuntimeError(`domain ${domain}: cannot read the gateway's certificate ${gw.tlsCert}: ${(err as Error).message}`);
    }
    if (covered) return;
    throw new UsageError(
      gw.tlsCa
        ? `domain ${domain}: the gateway serves HTTPS with sbx's CA, which signs only for names under ${gw.domain} (its name constraint); give the gateway a certificate that covers ${domain} (SBX_TLS_CERT, SBX_TLS_KEY)`
        : `domain ${domain}: the gateway's certificate (SBX_TLS_CERT, as the gateway serves it now; its log says when it refused a renewal) does not cover it; give one that does`,
    );
  }

  listPorts(ref: string): PortInfo[] {
    const record = this.resolve(ref);
    return portInfos(record.name, record.ports ?? [], this.gatewayAddress());
  }

  /** Stops routing ports (idempotent); resolves with the ports that were exposed and now are not. */
  async unexposePorts(ref: string, ports: ReadonlyArray<number | string>): Promise<number[]> {
    const gone = parsePorts(ports);
    if (gone.length === 0) throw new UsageError('no port given: sbx port rm SANDBOX PORT...');
    return this.#viaDaemon('unexpose', { ref, ports: gone }, undefined, () => this.#unexposePorts(ref, gone));
  }

  async #unexposePorts(ref: string, gone: number[]): Promise<number[]> {
    const removed = await this.#updateSandbox(ref, (r) => {
      const before = r.ports ?? [];
      r.ports = before.filter((p) => !gone.includes(p.port));
      return before.filter((p) => gone.includes(p.port)).map((p) => p.port);
    });
    await this.#routesChanged([], { portsOnly: true });
    return removed;
  }

  /** The sandbox's traffic token; `rotate` replaces it and the old one stops working at once. */
  async token(ref: string, options: { rotate?: boolean } = {}): Promise<string> {
    const current = this.resolve(ref);
    if (current.token && !options.rotate) return current.token;
    const token = await this.#updateSandbox(ref, (r) => (r.token = newToken()));
    await this.#routesChanged();
    return token;
  }

  // ---- network policy -------------------------------------------------------------------

  /** The sandbox's outbound policy. */
  getNetwork(ref: string): NetworkPolicy {
    return this.resolve(ref).network ?? DEFAULT_POLICY;
  }

  /**
   * Replaces the whole outbound policy (PUT semantics) and resolves once the kernel enforces it:
   * open connections that the new policy denies are cut. Invalid input, or rules the kernel
   * refuses, leave the old policy in force.
   */
  async updateNetwork(ref: string, input: NetworkPolicyInput): Promise<NetworkPolicy> {
    const policy = (await policies()).normalizePolicy(input);
    this.#existsBeforeStart(ref);
    await this.ensureGateway();
    return this.#viaDaemon('network', { ref, policy }, undefined, () => this.#updateNetwork(ref, policy));
  }

  async #updateNetwork(ref: string, policy: NetworkPolicy): Promise<NetworkPolicy> {
    const record = this.#notRemoving(this.resolve(ref));
    const egress = await this.egress();
    // Kernel first: if it refuses, the store still holds the policy that is in force.
    await egress.apply(record, { policy, changed: true });
    await this.#updateSandbox(record.id, (r) => {
      r.network = policy;
    });
    await this.#routesChanged([], { policiesOnly: true });
    return policy;
  }

  /**
   * Puts the stored policy of a sandbox back in force (the gateway does this at start and when a
   * container starts: rules are checked against the store and repaired).
   */
  async enforceNetwork(id: string): Promise<void> {
    const record = this.store.sandboxes().find((r) => r.id === id);
    if (!record || record.creating || record.removing) return;
    const egress = await this.egress();
    await egress.apply(record);
  }

  // ---- network log and check -----------------------------------------------------------

  /**
   * The egress decisions the gateway made for a sandbox (it keeps the last 10,000, in memory). The
   * gateway is started when it does not run: its log then starts empty.
   */
  async networkLog(ref: string, query: NetworkLogQuery = {}): Promise<NetworkLogEntry[]> {
    const client = await this.#logClient(ref);
    return (await import('../daemon-client/network-log.ts')).readNetworkLog(client, ref, query);
  }

  /** The log as it stands, then each new entry as it comes, until `signal` aborts or the sandbox goes. */
  async followNetworkLog(ref: string, query: NetworkLogQuery = {}, signal?: AbortSignal): Promise<AsyncIterable<NetworkLogEntry>> {
    const client = await this.#logClient(ref);
    return (await import('../daemon-client/network-log.ts')).followNetworkLog(client, ref, query, signal);
  }

  /** The gateway keeps the log: it is started when it does not run (its log then starts empty). */
  async #logClient(ref: string) {
    this.resolve(ref);
    await this.ensureGateway();
    const control = this.#daemon();
    if (!control) throw new RuntimeError(`the gateway of ${this.home} does not run, so nothing is logged (sbx gateway start)`);
    const { DaemonClient, unixTransport } = await import('../daemon-client/client.ts');
    return new DaemonClient(unixTransport(control));
  }

  /** A dry run of one connection out of the sandbox (network-check.ts). */
  async checkNetwork(ref: string, destination: string, options: { udp?: boolean } = {}): Promise<NetworkCheck> {
    const [{ parseCheckDestination, checkConnection }, { compilePolicy }, { UpstreamResolver }, { dnsUpstream }, { HostAddresses }] = await Promise.all([
      import('./network-check.ts'),
      policies(),
      import('../gateway/upstream.ts'),
      import('../gateway/settings.ts'),
      import('../gateway/host-addresses.ts'),
    ]);
    const dest = parseCheckDestination(destination);
    const record = this.resolve(ref);
    const policy = compilePolicy(record.network ?? DEFAULT_POLICY);
    const resolver = new UpstreamResolver(dnsUpstream());
    const host = new HostAddresses();
    const decided = await checkConnection(policy, { ...dest, udp: options.udp }, { resolve: (n) => resolver.addresses(n), isHost: (a) => host.has(a), isSandbox: (a) => host.onSandboxBridge(a), ipv6: !!record.ipv6 });
    return { sandbox: record.name, destination, protocol: options.udp ? 'udp' : 'tcp', port: dest.port, ...(dest.name ? { name: dest.name } : {}), ...decided };
  }

  /** block-all with no exceptions. */
  blockNetwork(ref: string): Promise<NetworkPolicy> {
    return this.updateNetwork(ref, { mode: 'block-all' });
  }

  /** allow-all with no lists. */
  unblockNetwork(ref: string): Promise<NetworkPolicy> {
    return this.updateNetwork(ref, { mode: 'allow-all' });
  }

  // ---- lifecycle ------------------------------------------------------------------------

  start(ref: string): Promise<SandboxInfo> {
    return this.#setDesired(ref, 'running');
  }

  stop(ref: string): Promise<SandboxInfo> {
    return this.#setDesired(ref, 'stopped');
  }

  async pause(ref: string): Promise<SandboxInfo> {
    const current = await this.get(ref);
    if (current.status !== 'running' && current.status !== 'paused') {
      throw new RuntimeError(`sandbox ${current.name} is ${current.status}: only a running sandbox can be paused (sbx start it first)`);
    }
    return this.#setDesired(ref, 'paused');
  }

  async resume(ref: string): Promise<SandboxInfo> {
    const current = await this.get(ref);
    if (current.status !== 'paused' && current.status !== 'running') {
      throw new RuntimeError(`sandbox ${current.name} is ${current.status}, not paused: use sbx start`);
    }
    return this.#setDesired(ref, 'running');
  }

  async #setDesired(ref: string, desired: SandboxRecord['desired']): Promise<SandboxInfo> {
    const record = await this.#updateSandbox(ref, (r) => {
      r.desired = desired;
      return r;
    });
    const world = await this.#world();
    const runtime = world.runtime;
    await reconcileSandbox(record, world);
    // The gateway routes running sandboxes directly, and answers `ls` and `inspect` from its view
    // of the containers: it must know before this returns (Docker's event may come later).
    await this.#routesChanged([record.id]);
    return this.#info(record, await runtime.inspectContainer(objectNames(record.id).container));
  }

  // ---- remove ---------------------------------------------------------------------------

  /**
   * Removes a sandbox and everything it owns. A running or paused one needs `force`.
   * With `force`, a sandbox that is already gone counts as removed (idempotent).
   */
  async remove(ref: string, options: { force?: boolean } = {}): Promise<RemoveResult> {
    return this.#viaDaemon('remove', { ref, force: options.force }, undefined, () => this.#remove(ref, options));
  }

  async #remove(ref: string, options: { force?: boolean }): Promise<RemoveResult> {
    let record: SandboxRecord;
    try {
      record = this.resolve(ref);
    } catch (err) {
      if (options.force && err instanceof NotFoundError) return { id: '', name: ref, removed: false };
      throw err;
    }
    const runtime = await this.runtime();
    // A sandbox whose removal began is finished without asking again.
    if (!options.force && !record.removing) {
      const container = await runtime.inspectContainer(objectNames(record.id).container);
      if (container && container.state !== 'stopped') {
        throw new UsageError(`sandbox ${record.name} is ${container.state}: pass --force to remove it anyway`);
      }
    }
    await removeSandbox(record, { ...(await this.#world()), store: this.store });
    if (record.ports?.length) await this.#routesChanged([record.id]);
    return { id: record.id, name: record.name, removed: true };
  }

  // ---- exec -----------------------------------------------------------------------------

  /** Runs a command in a running sandbox and resolves with its exit code. */
  async exec(ref: string, options: ExecSandboxOptions): Promise<number> {
    checkCommand(options);
    return execInSandbox(await this.runtime(), await this.execTarget(ref), options);
  }

  // ---- images ---------------------------------------------------------------------------

  async imageTags(): Promise<string[]> {
    return (await this.runtime()).listImageTags();
  }
}
