// The only module that talks to the Docker engine (through dockerode). Everything else sees
// methods in sbx's own words. The engine is found as the docker CLI finds it: DOCKER_HOST,
// else the local socket (docker-modem reads the environment); tcp:// and ssh:// by engine-options.ts.
import Docker from 'dockerode';
import type { Readable, Writable } from 'node:stream';
import { NotFoundError, RuntimeError } from '../core/errors.ts';
import { ipv6Subnet, objectNames, type SandboxRecord } from '../core/sandbox.ts';
import { hardening } from './hardening.ts';
import { LABEL_HOME, LABEL_ID, LABEL_MANAGED } from './labels.ts';
import { engineMessage, isGoneOrDone, statusOf, toRuntimeError } from './errors.ts';
import { engineClient } from './engine-options.ts';

/** The command that keeps a sandbox up when the user gave none; Docker's init reaps zombies. */
export const IDLE_COMMAND = ['sleep', 'infinity'];

export type ContainerState = 'running' | 'paused' | 'stopped';

export interface ContainerSummary {
  state: ContainerState;
  ip?: string;
  ip6?: string;
  /** The init process on the host (its network namespace is the sandbox's); inspect only. */
  pid?: number;
}

export interface ExecOptions {
  cmd: string[];
  env?: Record<string, string>;
  workdir?: string;
  tty?: boolean;
  stdin?: Readable;
  stdout: Writable;
  stderr: Writable;
  detach?: boolean;
  /** Terminal size for -t, kept in sync by the caller through the returned resize(). */
  size?: { rows: number; columns: number };
  onStart?: (control: { resize(size: { rows: number; columns: number }): void }) => void;
}

function stateOf(s: { Running?: boolean; Paused?: boolean } | string): ContainerState {
  if (typeof s === 'string') return s === 'paused' ? 'paused' : s === 'running' ? 'running' : 'stopped';
  if (s.Paused) return 'paused';
  return s.Running ? 'running' : 'stopped';
}

export interface NetworkSummary {
  subnet: string;
  gateway: string;
  /** The IPv6 subnet, for networks made with one. */
  subnet6?: string;
}

function networkSummary(n: { IPAM?: { Config?: Array<{ Subnet?: string; Gateway?: string }> } }): NetworkSummary | undefined {
  const configs = n.IPAM?.Config ?? [];
  const v4 = configs.find((c) => c.Subnet && !c.Subnet.includes(':'));
  const v6 = configs.find((c) => c.Subnet?.includes(':'));
  return v4?.Subnet && v4.Gateway ? { subnet: v4.Subnet, gateway: v4.Gateway, ...(v6?.Subnet ? { subnet6: v6.Subnet } : {}) } : undefined;
}

function envList(env: Record<string, string> = {}): string[] {
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

export class Runtime {
  readonly docker: Docker;

  constructor(docker: Docker = engineClient()) {
    this.docker = docker;
  }

  async ping(): Promise<void> {
    try {
      await this.docker.ping();
    } catch (err) {
      throw toRuntimeError(err, 'the Docker engine did not answer');
    }
  }

  #cpuCount?: Promise<number>;
  #info?: Promise<{ NCPU?: number; ID?: string }>;

  /** Docker's info(), asked once per process. */
  #engineInfo(): Promise<{ NCPU?: number; ID?: string }> {
    this.#info ??= this.docker.info().catch((err: unknown) => {
      this.#info = undefined;
      throw toRuntimeError(err, 'the Docker engine did not answer');
    });
    return this.#info;
  }

  /** The engine's own id (Docker's info().ID): tells two engines apart. */
  async engineId(): Promise<string> {
    return (await this.#engineInfo()).ID ?? '';
  }

  /** How many CPUs the engine has (Docker's info().NCPU), asked once per process. */
  cpuCount(): Promise<number> {
    this.#cpuCount ??= this.#engineInfo().then((info) => info.NCPU ?? 0);
    return this.#cpuCount;
  }

  // ---- networks -------------------------------------------------------------------------

  /**
   * `v4`: the IPv4 subnet and gateway (sbx's address plan), else one from Docker's pools. `ipv6`:
   * also sbx's unique-local IPv6 /64 (container start and removal then take longer).
   */
  async createSandboxNetwork(id: string, labels: Record<string, string>, ipv6 = false, v4?: { subnet: string; gateway: string }): Promise<void> {
    const { network, bridge } = objectNames(id);
    const config = [...(v4 ? [{ Subnet: v4.subnet, Gateway: v4.gateway }] : []), ...(ipv6 ? [{ Subnet: ipv6Subnet(id) }] : [])];
    try {
      await this.docker.createNetwork({
        Name: network,
        Driver: 'bridge',
        CheckDuplicate: true,
        Labels: labels,
        ...(ipv6 ? { EnableIPv6: true } : {}),
        ...(config.length ? { IPAM: { Driver: 'default', Config: config } } : {}),
        Options: {
          'com.docker.network.bridge.name': bridge,
          'com.docker.network.bridge.enable_icc': 'false',
        },
      });
    } catch (err) {
      throw toRuntimeError(err, `could not create network ${network}`);
    }
  }

  /** Every IPv4 subnet of the engine's networks (sbx's and everyone else's). */
  async ipv4SubnetsInUse(): Promise<string[]> {
    try {
      const nets = await this.docker.listNetworks();
      return nets.flatMap((n) => (n.IPAM?.Config ?? []).map((c) => c.Subnet ?? '')).filter((s) => s && !s.includes(':'));
    } catch (err) {
      throw toRuntimeError(err, 'could not list the engine\'s networks');
    }
  }

  /** The sandbox network's subnet and the host's address on it (the sandbox's resolver). */
  async sandboxNetwork(id: string): Promise<NetworkSummary | undefined> {
    const { network } = objectNames(id);
    try {
      return networkSummary(await this.docker.getNetwork(network).inspect());
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw toRuntimeError(err, `could not inspect network ${network}`);
    }
  }

  /** The engine's default bridge (docker0): its interface and subnet, when it has one. */
  async defaultBridge(): Promise<{ bridge: string; subnet: string } | undefined> {
    try {
      const n = await this.docker.getNetwork('bridge').inspect();
      const bridge = n.Options?.['com.docker.network.bridge.name'];
      const subnet = networkSummary(n)?.subnet;
      return n.Driver === 'bridge' && bridge && subnet ? { bridge, subnet } : undefined;
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw toRuntimeError(err, 'could not inspect the default bridge network');
    }
  }

  /** Every sandbox network of one SBX_HOME, by sandbox id. */
  async listSandboxNetworks(home: string): Promise<Map<string, NetworkSummary>> {
    const found = new Map<string, NetworkSummary>();
    try {
      const nets = await this.docker.listNetworks({ filters: { label: [`${LABEL_MANAGED}=true`, `${LABEL_HOME}=${home}`] } });
      for (const n of nets) {
        const id = n.Labels?.[LABEL_ID];
        const summary = networkSummary(n);
        if (id && summary) found.set(id, summary);
      }
    } catch (err) {
      throw toRuntimeError(err, 'could not list sandbox networks');
    }
    return found;
  }

  async removeNetwork(name: string): Promise<void> {
    try {
      await this.docker.getNetwork(name).remove();
    } catch (err) {
      if (!isGoneOrDone(err)) throw toRuntimeError(err, `could not remove network ${name}`);
    }
  }

  // ---- containers -----------------------------------------------------------------------

  /** `resolvConf`: a host file mounted as the sandbox's /etc/resolv.conf (sbx's DNS forwarder). */
  async createSandboxContainer(record: SandboxRecord, labels: Record<string, string>, resolvConf?: string): Promise<void> {
    const { container, network } = objectNames(record.id);
    const cmd = record.command.length > 0 ? record.command : IDLE_COMMAND;
    try {
      await this.docker.createContainer({
        name: container,
        Image: record.image,
        Cmd: cmd,
        Env: envList(record.env),
        Hostname: record.name,
        Labels: labels,
        HostConfig: {
          Init: true,
          NetworkMode: network,
          ...hardening(record),
          Memory: record.memory || undefined,
          NanoCpus: record.cpus ? Math.round(record.cpus * 1e9) : undefined,
          RestartPolicy: { Name: 'no' },
          Binds: resolvConf ? [`${resolvConf}:/etc/resolv.conf:ro`] : undefined,
          // Loopback gets ::1 as on any host, so servers bound to "localhost" or ::1 work (and are
          // reachable through their URLs); the sandbox network itself stays IPv4-only.
          Sysctls: { 'net.ipv6.conf.lo.disable_ipv6': '0' },
        },
      });
    } catch (err) {
      if (statusOf(err) === 404) {
        throw new RuntimeError(`image ${record.image} is not on this engine (sbx image build makes the default one)`, { cause: err });
      }
      throw toRuntimeError(err, `could not create container ${container}`);
    }
  }

  async inspectContainer(name: string): Promise<ContainerSummary | undefined> {
    try {
      const info = await this.docker.getContainer(name).inspect();
      const nets = Object.values(info.NetworkSettings?.Networks ?? {});
      return { state: stateOf(info.State), ip: nets[0]?.IPAddress || undefined, ip6: nets[0]?.GlobalIPv6Address || undefined, pid: info.State?.Pid || undefined };
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw toRuntimeError(err, `could not inspect container ${name}`);
    }
  }

  /** Every sbx container of one SBX_HOME, by container name. */
  async listSandboxContainers(home: string): Promise<Map<string, ContainerSummary>> {
    try {
      const list = await this.docker.listContainers({
        all: true,
        filters: { label: [`${LABEL_MANAGED}=true`, `${LABEL_HOME}=${home}`] },
      });
      const out = new Map<string, ContainerSummary>();
      for (const c of list) {
        const net = Object.values(c.NetworkSettings?.Networks ?? {})[0] as { IPAddress?: string; GlobalIPv6Address?: string } | undefined;
        const summary = { state: stateOf(c.State), ip: net?.IPAddress || undefined, ip6: net?.GlobalIPv6Address || undefined };
        for (const n of c.Names) out.set(n.replace(/^\//, ''), summary);
      }
      return out;
    } catch (err) {
      throw toRuntimeError(err, 'could not list containers');
    }
  }

  /**
   * Changes the limits of a running container (a warm-pool claim). Memory as create sets it:
   * swap as much again (Docker's default of twice the memory in all).
   */
  async updateLimits(name: string, limits: { memory: number; cpus: number; pidsLimit: number }): Promise<void> {
    await this.#containerCall(name, 'update', (c) =>
      c.update({
        ...(limits.memory ? { Memory: limits.memory, MemorySwap: limits.memory * 2 } : {}),
        ...(limits.cpus ? { NanoCpus: Math.round(limits.cpus * 1e9) } : {}),
        PidsLimit: limits.pidsLimit,
      }),
    );
  }

  async startContainer(name: string): Promise<void> {
    await this.#containerCall(name, 'start', (c) => c.start());
  }

  async stopContainer(name: string, timeoutSeconds = 3): Promise<void> {
    await this.#containerCall(name, 'stop', (c) => c.stop({ t: timeoutSeconds }));
  }

  async pauseContainer(name: string): Promise<void> {
    await this.#containerCall(name, 'pause', (c) => c.pause());
  }

  async unpauseContainer(name: string): Promise<void> {
    await this.#containerCall(name, 'resume', (c) => c.unpause());
  }

  async removeContainer(name: string): Promise<void> {
    try {
      await this.docker.getContainer(name).remove({ force: true, v: true });
    } catch (err) {
      // 409 "removal already in progress" also means it is going away.
      if (!isGoneOrDone(err) && statusOf(err) !== 409) throw toRuntimeError(err, `could not remove container ${name}`);
    }
  }

  async #containerCall(name: string, verb: string, call: (c: Docker.Container) => Promise<unknown>): Promise<void> {
    try {
      await call(this.docker.getContainer(name));
    } catch (err) {
      if (statusOf(err) === 304) return; // already in that state
      if (statusOf(err) === 404) throw new NotFoundError(`container ${name} is missing (sbx rm cleans it up)`, { cause: err });
      throw toRuntimeError(err, `could not ${verb} container ${name}`);
    }
  }

  // ---- exec -----------------------------------------------------------------------------

  /** Runs a command in a container; resolves with its exit code (0 for --detach). */
  async exec(name: string, opts: ExecOptions): Promise<number> {
    let exec: Docker.Exec;
    try {
      exec = await this.docker.getContainer(name).exec({
        Cmd: opts.cmd,
        Env: envList(opts.env),
        WorkingDir: opts.workdir,
        Tty: !!opts.tty,
        AttachStdin: !!opts.stdin && !opts.detach,
        AttachStdout: !opts.detach,
        AttachStderr: !opts.detach,
      });
    } catch (err) {
      if (statusOf(err) === 409) throw new RuntimeError(`sandbox is not running (${(err as Error).message.replace(/^.*: /, '')}): sbx start or sbx resume it first`);
      throw toRuntimeError(err, 'could not start the command');
    }
    if (opts.detach) {
      // The engine answers at once; drop the (empty) response stream so no socket keeps us alive.
      const reply = (await exec.start({ Detach: true, Tty: !!opts.tty })) as { destroy?(): void; resume?(): void } | undefined;
      reply?.resume?.();
      reply?.destroy?.();
      return 0;
    }
    const stream = (await exec.start({ hijack: true, stdin: !!opts.stdin, Tty: !!opts.tty })) as NodeJS.ReadWriteStream & { end(): void };
    const control = {
      resize: (size: { rows: number; columns: number }) => {
        exec.resize({ h: size.rows, w: size.columns }).catch(() => {});
      },
    };
    if (opts.tty && opts.size) control.resize(opts.size);
    opts.onStart?.(control);
    const done = new Promise<void>((resolve, reject) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', reject);
    });
    if (opts.tty) stream.pipe(opts.stdout, { end: false });
    else this.docker.modem.demuxStream(stream, opts.stdout, opts.stderr);
    if (opts.stdin) {
      opts.stdin.pipe(stream as unknown as Writable, { end: false });
      // Close the write half on stdin EOF so the command sees EOF, but keep reading its output.
      opts.stdin.on('end', () => (stream as unknown as { end(): void }).end());
    }
    await done;
    opts.stdin?.unpipe(stream as unknown as Writable);
    const info = await exec.inspect();
    return info.ExitCode ?? 1;
  }

  // ---- events ---------------------------------------------------------------------------

  /**
   * Calls `onChange(sandboxId, action)` for every container event of this SBX_HOME (start, die,
   * pause, unpause, destroy...), reconnecting when the stream breaks. `onConnection` hears when
   * the stream is up (true) and when it broke (false): what happened in between was not reported.
   * Returns a stop function.
   */
  watchSandboxEvents(home: string, onChange: (id: string, action: string) => void, onConnection?: (connected: boolean) => void): () => void {
    let stopped = false;
    let current: NodeJS.ReadableStream | undefined;
    const connect = async () => {
      while (!stopped) {
        try {
          const stream = (await this.docker.getEvents({
            filters: { type: ['container'], label: [`${LABEL_MANAGED}=true`, `${LABEL_HOME}=${home}`] },
          })) as NodeJS.ReadableStream;
          current = stream;
          onConnection?.(true);
          let buffered = '';
          await new Promise<void>((resolve) => {
            stream.on('data', (chunk: Buffer) => {
              buffered += chunk.toString();
              let nl: number;
              while ((nl = buffered.indexOf('\n')) >= 0) {
                const line = buffered.slice(0, nl);
                buffered = buffered.slice(nl + 1);
                try {
                  const ev = JSON.parse(line) as { Action?: string; Actor?: { Attributes?: Record<string, string> } };
                  const id = ev.Actor?.Attributes?.[LABEL_ID];
                  if (id) onChange(id, ev.Action ?? '');
                } catch {}
              }
            });
            stream.on('end', resolve);
            stream.on('error', () => resolve());
            stream.on('close', resolve);
          });
          onConnection?.(false);
        } catch {}
        if (!stopped) await new Promise((r) => setTimeout(r, 1000));
      }
    };
    void connect();
    return () => {
      stopped = true;
      (current as unknown as { destroy?(): void } | undefined)?.destroy?.();
    };
  }

  // ---- images ---------------------------------------------------------------------------

  async imageExists(ref: string): Promise<boolean> {
    try {
      await this.docker.getImage(ref).inspect();
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw toRuntimeError(err, `could not inspect image ${ref}`);
    }
  }

  /** Tags of every local image (for completion and checks). */
  async listImageTags(): Promise<string[]> {
    try {
      const images = await this.docker.listImages();
      return images.flatMap((i) => i.RepoTags ?? []).filter((t) => t !== '<none>:<none>').sort();
    } catch (err) {
      throw toRuntimeError(err, 'could not list images');
    }
  }

  async pullImage(ref: string, onProgress?: (line: string) => void): Promise<void> {
    try {
      const stream = await this.docker.pull(ref);
      await new Promise<void>((resolve, reject) => {
        this.docker.modem.followProgress(
          stream,
          (err: Error | null) => (err ? reject(err) : resolve()),
          (ev: { status?: string; id?: string; progress?: string }) =>
            onProgress?.([ev.id, ev.status, ev.progress].filter(Boolean).join(' ')),
        );
      });
    } catch (err) {
      throw new RuntimeError(
        `image ${ref} is not on this engine and could not be pulled (${toRuntimeError(err, 'pull').message.replace(/^pull: /, '')}); build or load it locally first`,
        { cause: err },
      );
    }
  }

  /** `docker import`: a root filesystem tarball becomes an image with the given Dockerfile changes. */
  async importImage(tar: Readable, ref: string, changes: string[]): Promise<void> {
    const [repo, tag] = splitRef(ref);
    try {
      const stream = await this.docker.importImage(tar, { repo, tag, changes } as object);
      await new Promise<void>((resolve, reject) => {
        this.docker.modem.followProgress(stream as NodeJS.ReadableStream, (err: Error | null, out: Array<{ error?: string }>) => {
          const failed = out?.find((o) => o.error);
          if (err || failed) reject(err ?? new Error(failed!.error));
          else resolve();
        });
      });
    } catch (err) {
      throw toRuntimeError(err, `could not import image ${ref}`);
    }
  }

  /**
   * Builds `ref` from a tar build context (a Dockerfile and its files) with the engine's classic
   * builder: no BuildKit session, nothing pulled. Resolves with the image id once the build has
   * finished; a failed step rejects with the builder's message and the last lines of its output.
   */
  async buildImage(context: Readable, ref: string, labels: Record<string, string>, onProgress?: (line: string) => void): Promise<string> {
    let stream: NodeJS.ReadableStream;
    try {
      stream = await this.docker.buildImage(context, { t: ref, labels, rm: true, forcerm: true, pull: false } as object);
    } catch (err) {
      throw toRuntimeError(err, `could not build image ${ref}`);
    }
    const tail: string[] = [];
    let id = '';
    await new Promise<void>((resolve, reject) => {
      this.docker.modem.followProgress(
        stream,
        (err: Error | null, out: BuildLine[]) => {
          const failed = out?.find((o) => o.error || o.errorDetail);
          if (err || failed) {
            const why = failed ? (failed.errorDetail?.message ?? failed.error) : engineMessage(err);
            reject(new RuntimeError(`could not build image ${ref}: ${why}${tail.length ? `\n${tail.join('\n')}` : ''}`, { cause: err ?? undefined }));
          } else resolve();
        },
        (line: BuildLine) => {
          if (line.aux?.ID) id = line.aux.ID;
          for (const text of (line.stream ?? '').split('\n').filter((t) => t.trim())) {
            tail.push(text);
            if (tail.length > 20) tail.shift();
            onProgress?.(text.trim());
          }
        },
      );
    });
    return id;
  }

  /** An image's labels, or undefined when the engine does not have it. */
  async imageLabels(ref: string): Promise<Record<string, string> | undefined> {
    try {
      const info = await this.docker.getImage(ref).inspect();
      return info.Config?.Labels ?? {};
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw toRuntimeError(err, `could not inspect image ${ref}`);
    }
  }

  async removeImage(ref: string): Promise<void> {
    try {
      await this.docker.getImage(ref).remove({ force: true });
    } catch (err) {
      if (!isGoneOrDone(err)) throw toRuntimeError(err, `could not remove image ${ref}`);
    }
  }
}

/** One line of the classic builder's JSON stream. */
interface BuildLine {
  stream?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

function splitRef(ref: string): [string, string] {
  const slash = ref.lastIndexOf('/');
  const colon = ref.lastIndexOf(':');
  return colon > slash ? [ref.slice(0, colon), ref.slice(colon + 1)] : [ref, 'latest'];
}
