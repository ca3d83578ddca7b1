// DOCKER_HOST=ssh://[user@]host[:port], done as the docker CLI does it: every connection is the
// system `ssh` running `docker system dial-stdio` on the remote host, so the user's ssh config,
// keys, agent and known_hosts apply as they do for `docker -H ssh://`. The connections feed an
// http.Agent (kept alive, so one ssh serves many requests) that dockerode's modem uses for plain
// requests and hijacked streams (exec, attach) alike. Nothing here runs unless DOCKER_HOST is ssh.
import { Agent, type AgentOptions } from 'node:http';
import { Duplex } from 'node:stream';
import type { ChildProcess } from 'node:child_process';
import { UsageError } from '../core/errors.ts';

export interface SshTarget {
  user?: string;
  host: string;
  port?: string;
}

const FORM = 'expected ssh://[user@]host[:port]';

/** The parts of an ssh:// DOCKER_HOST; anything the docker CLI would refuse (or sbx cannot pass on) is a UsageError. */
export function parseSshHost(url: string): SshTarget {
  const bad = (why: string) => new UsageError(`DOCKER_HOST=${url}: ${why}, ${FORM}`);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw bad('not a URL');
  }
  if (u.protocol !== 'ssh:') throw bad(`scheme ${u.protocol} is not ssh:`);
  if (u.password) throw bad('a password in the URL is not supported (use ssh keys or an agent)');
  // WHATWG keeps the brackets of an IPv6 literal; ssh wants the bare address.
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) throw bad('no host');
  if (u.pathname.replace(/\/+/g, '') !== '') throw bad(`a path (${u.pathname}) is not supported: set DOCKER_HOST for the remote user instead`);
  if (u.search || u.hash) throw bad('no query or fragment allowed');
  let user: string;
  try {
    user = decodeURIComponent(u.username);
  } catch {
    throw bad('a malformed %-escape in the user');
  }
  // ssh would read a leading '-' as an option, and older OpenSSH expands %u into commands.
  for (const [what, v] of [['user', user], ['host', host]] as const) {
    if (v.startsWith('-') || /[\s\x00-\x1f\x7f%]/.test(v)) throw bad(`the ${what} ${JSON.stringify(v)} has a leading '-', a space, a control character or a '%'`);
  }
  return { host, ...(user ? { user } : {}), ...(u.port ? { port: u.port } : {}) };
}

/** ssh's arguments, as the docker CLI's connhelper builds them, plus BatchMode: never a prompt. */
export function sshArgs(t: SshTarget): string[] {
  return [
    '-o', 'ConnectTimeout=30', '-T', '-o', 'BatchMode=yes',
    ...(t.user ? ['-l', t.user] : []),
    ...(t.port ? ['-p', t.port] : []),
    '--', t.host, 'docker', 'system', 'dial-stdio',
  ];
}

/** How the target reads in messages. */
export function describeTarget(t: SshTarget): string {
  return `${t.user ? `${t.user}@` : ''}${t.host}${t.port ? ` port ${t.port}` : ''}`;
}

/** An ssh process's stdin and stdout as one stream, with the bits of net.Socket an http.Agent calls. */
class SshConnection extends Duplex {
  readonly #child: ChildProcess;
  readonly #target: SshTarget;
  #stderr = '';
  #received = false;
  #timeout = 0;
  #timer?: NodeJS.Timeout;

  constructor(target: SshTarget) {
    super();
    this.#target = target;
    // Loaded here: a CLI whose engine is not ssh never pays for child_process.
    const { spawn } = process.getBuiltinModule('node:child_process') as typeof import('node:child_process');
    const child = spawn('ssh', sshArgs(target), { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child = child;
    child.stderr!.on('data', (d: Buffer) => {
      this.#stderr = (this.#stderr + d.toString()).slice(-4096);
    });
    child.stdout!.on('data', (d: Buffer) => {
      this.#received = true;
      this.#active();
      if (!this.push(d)) child.stdout!.pause();
    });
    child.stdin!.on('error', () => {}); // a dead ssh is reported by its exit below
    child.on('error', (err) => this.destroy(this.#failure(err.message)));
    // The end of the stream waits for ssh's exit, so that a failed ssh is an error (with its
    // reason), not an empty answer.
    child.on('close', (code) => {
      if (this.destroyed) return;
      if (code !== 0 && (code === 255 || !this.#received)) this.destroy(this.#failure(`exit ${code ?? 'by signal'}`));
      else this.push(null);
    });
  }

  #failure(fallback: string): Error {
    const line = this.#stderr.split('\n').map((l) => l.trim()).filter(Boolean).pop();
    return Object.assign(new Error(`ssh to ${describeTarget(this.#target)} failed: ${line ?? fallback}`), { code: 'ESSH' });
  }

  override _read(): void {
    this.#child.stdout!.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.#active();
    if (this.#child.stdin!.write(chunk)) done();
    else this.#child.stdin!.once('drain', () => done());
  }

  override _final(done: (err?: Error | null) => void): void {
    this.#child.stdin!.end(() => done());
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    clearTimeout(this.#timer);
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill();
    done(err);
  }

  // ---- what http.Agent and ClientRequest call on a socket ----------------------------------

  get timeout(): number {
    return this.#timeout;
  }

  setTimeout(ms: number, onTimeout?: () => void): this {
    this.#timeout = ms;
    if (onTimeout) this.once('timeout', onTimeout);
    this.#active();
    return this;
  }

  /** An idle timer as net.Socket has: 'timeout' after ms without traffic. */
  #active(): void {
    clearTimeout(this.#timer);
    if (this.#timeout > 0) this.#timer = setTimeout(() => this.emit('timeout'), this.#timeout).unref();
  }

  setKeepAlive(): this {
    return this;
  }

  setNoDelay(): this {
    return this;
  }

  /** An idle pooled connection must not keep the process alive: nor its ssh, nor its pipes. */
  ref(): this {
    this.#child.ref();
    for (const s of [this.#child.stdin, this.#child.stdout, this.#child.stderr]) (s as unknown as { ref?: () => void })?.ref?.();
    return this;
  }

  unref(): this {
    this.#child.unref();
    for (const s of [this.#child.stdin, this.#child.stdout, this.#child.stderr]) (s as unknown as { unref?: () => void })?.unref?.();
    return this;
  }
}

/** An http.Agent whose connections are ssh processes to the target; kept alive for reuse. */
export function sshAgent(target: SshTarget, options: AgentOptions = {}): Agent {
  // A few connections at once (an ssh process each): sshd drops bursts beyond MaxStartups (10).
  const agent = new Agent({ keepAlive: true, maxSockets: 8, ...options });
  // The Agent's own type wants a net.Socket; any Duplex with the calls above will do.
  (agent as unknown as { createConnection: () => Duplex }).createConnection = () => new SshConnection(target);
  return agent;
}
