// A test world in agent mode (SBX_AGENT=1): its sbx calls go to an agent container, whose
// sandboxes carry the agent's home (its volume's path) in their labels, not the client's. The
// cleanup removes what the agent made, then the agent, its volume and its socket directory.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { agentNames } from '../src/api/agent-backend.ts';
import { guardTable } from '../src/net/listener-guard.ts';
import { docker, removeRules, run, SBX, World, type Result, type RunOptions } from './helpers.ts';

/** A local user the sbx calls run as (setpriv, with that user's groups and a clean environment). */
export interface WorldUser {
  name: string;
  uid: number;
  gid: number;
  /** The user's HOME. */
  home: string;
}

export class AgentWorld extends World {
  /**
   * `dockerHost`: another engine (unix://..., tcp://...); `netns`: its network namespace, where
   * its rule tables are (else told by a unix:///tmp/<netns>/ socket); `uid`: whose agent it is
   * (its name); `user`: run sbx as that user.
   */
  readonly dockerHost?: string;
  readonly netns?: string;
  readonly uid: number;
  readonly user?: WorldUser;
  constructor(env: Record<string, string> = {}, options: { dockerHost?: string; netns?: string; uid?: number; user?: WorldUser } = {}) {
    super({ SBX_AGENT: '1', ...(options.dockerHost ? { DOCKER_HOST: options.dockerHost } : {}), ...env });
    this.dockerHost = options.dockerHost;
    this.netns = options.netns ?? (options.dockerHost ? /\/(sbxre-[0-9a-f]+)\//.exec(options.dockerHost)?.[1] : undefined);
    this.user = options.user;
    this.uid = options.user?.uid ?? options.uid ?? 0;
    // The user's own SBX_HOME: sbx refuses one it cannot write.
    if (this.user) chownSync(this.home, this.user.uid, this.user.gid);
  }

  get names() {
    return agentNames(this.home, this.uid, this.dockerHost ?? '');
  }

  /** docker against this world's engine, with the world's TLS settings (DOCKER_TLS_VERIFY...). */
  override docker(...args: string[]): Promise<Result> {
    if (!this.dockerHost) return docker(...args);
    const tls = Object.fromEntries(['DOCKER_TLS_VERIFY', 'DOCKER_TLS', 'DOCKER_CERT_PATH'].filter((k) => this.env[k] !== undefined).map((k) => [k, this.env[k]]));
    return run('docker', ['-H', this.dockerHost, ...args], { env: tls });
  }

  /** nft where this world's sandboxes' rules are: the engine's network namespace. */
  override nft(...args: string[]): Promise<Result> {
    return nftIn(this.netns, ...args);
  }

  /** The agent's home (its volume's path on the engine's host): what its sandboxes' labels name. */
  override async labelHome(): Promise<string> {
    const home = await this.agentHome();
    if (!home) throw new Error(`${this.names.volume} does not exist: the agent never started`);
    return home;
  }

  /** The agent logs to its container's output. */
  override async gatewayLog(): Promise<string> {
    const r = await this.docker('logs', this.names.container);
    return r.stdout + r.stderr;
  }

  /** The agent's gateway port (its gateway.json, in its volume on the engine's host). */
  override gatewayPort(): number {
    const home = execFileSync('docker', [...(this.dockerHost ? ['-H', this.dockerHost] : []), 'volume', 'inspect', '--format', '{{.Mountpoint}}', this.names.volume], { encoding: 'utf8' }).trim();
    return JSON.parse(readFileSync(join(home, 'gateway.json'), 'utf8')).port;
  }

  /** The agent's home: its volume's path on the engine's host (what its sandboxes' labels name). */
  async agentHome(): Promise<string | undefined> {
    const r = await this.docker('volume', 'inspect', '--format', '{{.Mountpoint}}', this.names.volume);
    return r.code === 0 ? r.stdout.trim() : undefined;
  }

  override async leftovers(): Promise<{ containers: string[]; networks: string[]; tables: string[] }> {
    const home = await this.agentHome();
    const lines = (s: string) => s.split('\n').filter(Boolean);
    if (!home) return { containers: [], networks: [], tables: [] };
    const filter = `label=sbx.home=${home}`;
    const c = await this.docker('ps', '-aq', '--filter', filter);
    const n = await this.docker('network', 'ls', '-q', '--filter', filter);
    return { containers: lines(c.stdout), networks: lines(n.stdout), tables: [] };
  }

  override async cleanup(): Promise<void> {
    const home = await this.agentHome();
    if (home) {
      const { containers, networks } = await this.leftovers();
      // Their rule tables by id, whoever's kernel they are in (the agent is gone after this).
      const ids = containers.length ? (await this.docker('inspect', '--format', '{{index .Config.Labels "sbx.id"}}', ...containers)).stdout.split('\n').filter(Boolean) : [];
      if (containers.length) await this.docker('rm', '-f', ...containers);
      if (networks.length) await this.docker('network', 'rm', ...networks);
      await this.docker('rm', '-f', this.names.container);
      await this.docker('volume', 'rm', '-f', this.names.volume);
      for (const id of ids) await removeRules(id, this.netns);
      await removeTable(guardTable(home), this.netns);
    } else {
      await this.docker('rm', '-f', this.names.container);
    }
    if (existsSync(this.names.socketDir)) rmSync(this.names.socketDir, { recursive: true, force: true });
    rmSync(this.home, { recursive: true, force: true });
  }

  /**
   * sbx as this world's user when it has one: only what the world sets reaches it (no root
   * environment; an empty value drops the variable; PATH starts with the tests' own Node, >= 22), so it picks its mode as that user would.
   */
  override sbx(args: string[], opts: RunOptions = {}): Promise<Result> {
    if (!this.user) return super.sbx(args, opts);
    return run('setpriv', this.#asUser(args, opts.env), { ...opts, env: {} });
  }

  /** A long-running sbx (port forward) as this world's user. */
  override spawn(args: string[], env: Record<string, string> = {}): ChildProcess {
    if (!this.user) return super.spawn(args, env);
    return spawn('setpriv', this.#asUser(args, env), { env: {}, stdio: ['pipe', 'pipe', 'pipe'] });
  }

  /** setpriv's arguments to run sbx as the user, with only this world's environment. */
  #asUser(args: string[], extra: Record<string, string | undefined> = {}): string[] {
    const user = this.user!;
    const env = { ...this.env, SBX_HOME: this.home, ...extra };
    const vars = Object.entries(env).filter(([, v]) => v !== undefined && v !== '').map(([k, v]) => `${k}=${v}`);
    return ['--reuid', String(user.uid), '--regid', String(user.gid), '--init-groups', 'env', '-i', `HOME=${user.home}`, `USER=${user.name}`, `PATH=${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`, ...vars, SBX, ...args];
  }
}

/** Deletes an nft table in the host's namespace, or in the remote engine's. */
async function removeTable(table: string, netns?: string): Promise<void> {
  await nftIn(netns, 'delete', 'table', 'inet', table);
}

/** nft in a network namespace (the engine's), or in this one. */
function nftIn(netns: string | undefined, ...args: string[]): Promise<Result> {
  return netns ? run('ip', ['netns', 'exec', netns, 'nft', ...args]) : run('nft', args);
}
