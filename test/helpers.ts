// Test helpers: run the real CLI (bin/sbx) against the real engine, each test file in its own
// SBX_HOME, and clean up every Docker object that home made, also when a test fails.
import { createConnection } from 'node:net';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { guardTable } from '../src/net/listener-guard.ts';
import { removeScript, TABLE } from '../src/net/nft-rules.ts';

export const ROOT = resolve(import.meta.dirname, '..');
export const SBX = join(ROOT, 'bin', 'sbx');

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  env?: Record<string, string | undefined>;
  timeoutMs?: number;
  cwd?: string;
}

export function run(file: string, args: string[], opts: RunOptions = {}): Promise<Result> {
  return new Promise((done) => {
    const child = execFile(
      file,
      args,
      { cwd: opts.cwd, env: { ...process.env, NO_COLOR: undefined, FORCE_COLOR: undefined, ...opts.env }, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        done({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    else child.stdin!.end();
  });
}

export const docker = (...args: string[]) => run('docker', args);

/** The one error line of a failed sbx call. */
export function oneErrorLine(r: Result): string {
  assert.notEqual(r.code, 0, `it succeeded: ${r.stdout}`);
  const text = r.stderr.trim();
  assert.equal(text.split('\n').length, 1, `one line, got:\n${text}`);
  assert.match(text, /^error: /);
  return text;
}

/** A separate sbx world: its own SBX_HOME, and a cleanup that removes all it made. */
export class World {
  readonly home = mkdtempSync(join(tmpdir(), 'sbx-test-'));
  /** Environment for every sbx call of this world (a gateway on any free port by default). */
  readonly env: Record<string, string>;

  constructor(env: Record<string, string> = {}) {
    this.env = { SBX_GATEWAY_PORT: '0', ...env };
  }

  sbx(args: string[], opts: RunOptions = {}): Promise<Result> {
    return run(SBX, args, { ...opts, env: { ...this.env, SBX_HOME: this.home, ...opts.env } });
  }

  /** docker against this world's engine. */
  docker(...args: string[]): Promise<Result> {
    return docker(...args);
  }

  /** nft where this world's sandboxes' rules are (this namespace, as root). */
  nft(...args: string[]): Promise<Result> {
    return run('nft', args);
  }

  /** The home its sandboxes' labels carry (sbx.home), where its gateway keeps its state. */
  async labelHome(): Promise<string> {
    return this.home;
  }

  /** What the gateway logged. */
  async gatewayLog(): Promise<string> {
    return readFileSync(join(this.home, 'gateway.log'), 'utf8');
  }

  /** The gateway's gateway.json: its pid, port and egress listeners. */
  async gatewayState(): Promise<{ port: number; host: string; egress: { dns: number; http: number; tls: number }; dnsUpstream: string; pid: number }> {
    return JSON.parse(readFileSync(join(await this.labelHome(), 'gateway.json'), 'utf8'));
  }

  /** The port this world's gateway listens on (it must be running). */
  gatewayPort(): number {
    return JSON.parse(readFileSync(join(this.home, 'gateway.json'), 'utf8')).port;
  }

  /**
   * Whether the gateway's nginx serves `host` itself by now (plain HTTP): its configuration names
   * the host, and its workers answer with that configuration's version (a route that is only
   * written may still be served by the Node gateway until nginx reloads).
   */
  async nginxCarries(host: string): Promise<boolean> {
    let text = '';
    try {
      text = readFileSync(join(this.home, 'run', 'nginx.conf'), 'utf8');
    } catch {
      return false;
    }
    const version = /version (\d+)\)/.exec(text)?.[1];
    const served = await curl(['-H', 'Host: sbx-gateway-control.invalid', `http://127.0.0.1:${this.gatewayPort()}/_sbx/config-version`]);
    return text.includes(`"${host}"`) && served.body.split(' ')[0] === version;
  }

  url(port: number, sandbox: string, path = '/'): string {
    return `http://${port}-${sandbox}.sbx.localhost:${this.gatewayPort()}${path}`;
  }

  /** Copies a file from test/fixtures into a sandbox. */
  async put(sandbox: string, fixture: string, dest: string): Promise<void> {
    const r = await this.sbx(['exec', '-i', sandbox, '--', 'sh', '-c', `cat > ${dest}`], { input: readFileSync(join(ROOT, 'test', 'fixtures', fixture), 'utf8') });
    if (r.code !== 0) throw new Error(`put ${fixture}: ${r.stderr}`);
  }

  /** Runs sbx and parses its --json output, failing loudly on a non-zero exit. */
  async json<T = any>(args: string[], opts: RunOptions = {}): Promise<T> {
    const dd = args.indexOf('--');
    const withJson = dd < 0 ? [...args, '--json'] : [...args.slice(0, dd), '--json', ...args.slice(dd)];
    const r = await this.sbx(withJson, opts);
    if (r.code !== 0) throw new Error(`sbx ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  spawn(args: string[], env: Record<string, string> = {}): ChildProcess {
    return spawn(SBX, args, { env: { ...process.env, ...this.env, SBX_HOME: this.home, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  }

  /** Starts `sbx port forward SANDBOX PORT` on a free local port: the process and that port, once it listens. */
  async forward(sandbox: string, port: number, env: Record<string, string> = {}): Promise<{ child: ChildProcess; localPort: number }> {
    const child = this.spawn(['port', 'forward', sandbox, String(port), '--local', '127.0.0.1:0'], env);
    const localPort = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
        const m = new RegExp(`Forwarding 127\\.0\\.0\\.1:(\\d+) -> ${sandbox}:${port}`).exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', (code) => reject(new Error(`port forward exited ${code}: ${out}`)));
    });
    return { child, localPort };
  }

  /**
   * Docker objects (containers, networks) labelled with this home, and sandboxes whose egress rules
   * (chains `*_<id>` in nft's `inet sbx`) are there while their network is gone: orphans (tests run
   * one file at a time).
   */
  async leftovers(): Promise<{ containers: string[]; networks: string[]; tables: string[] }> {
    const filter = `label=sbx.home=${this.home}`;
    const c = await docker('ps', '-aq', '--filter', filter);
    const n = await docker('network', 'ls', '-q', '--filter', filter);
    const lines = (s: string) => s.split('\n').filter(Boolean);
    return { containers: lines(c.stdout), networks: lines(n.stdout), tables: await orphanRules() };
  }

  async cleanup(): Promise<void> {
    await this.sbx(['gateway', 'stop']);
    const { containers, networks } = await this.leftovers();
    if (containers.length) await docker('rm', '-f', ...containers);
    if (networks.length) await docker('network', 'rm', ...networks);
    for (const id of await orphanRules()) await removeRules(id);
    await dropIdleSharedTable();
    // A gateway killed with -9 (the reliability tests) leaves its listener guard: this home's own.
    await run('nft', ['delete', 'table', 'inet', guardTable(this.home)]);
    rmSync(this.home, { recursive: true, force: true });
  }
}

/**
 * sbx keeps its shared table once made: what a test made, it takes when no sandbox has rules there
 * (test files run one at a time; as scripts/lib.sh drop_idle_sbx_table does for a whole run).
 */
export async function dropIdleSharedTable(): Promise<void> {
  const listed = await run('nft', ['list', 'table', 'inet', TABLE]);
  if (listed.code === 0 && ruleIds(listed.stdout).length === 0) await run('nft', ['delete', 'table', 'inet', TABLE]);
}

/** The ids of the sandboxes that have rules in an `nft list table inet sbx` text. */
export function ruleIds(text: string): string[] {
  return [...text.matchAll(/^\s*chain egress_([a-z0-9]+) \{/gm)].map((m) => m[1]!);
}

/** nft arguments that list one of a sandbox's own chains (exit 0 while its rules are in). */
export const chainOf = (id: string, chain = 'egress') => ['list', 'chain', 'inet', TABLE, `${chain}_${id}`];

/** nft arguments that cut a sandbox loose from its rules, as someone behind sbx's back could. */
export const dropDispatch = (id: string) => ['delete', 'element', 'inet', TABLE, 'from_sandbox', `{ "sbx-${id}" }`];

/** Removes a sandbox's rules (as sbx does), in this namespace or an engine's. */
export function removeRules(id: string, netns?: string): Promise<Result> {
  const script = removeScript(id);
  return netns ? run('ip', ['netns', 'exec', netns, 'nft', '-f', '-'], { input: script }) : run('nft', ['-f', '-'], { input: script });
}

/**
 * Sandboxes with rules in sbx's table whose sandbox network no longer exists. Others' tests share
 * the kernel: a create puts its rules in before its network exists, and an rm removes both at once,
 * so a sandbox counts only when it is still an orphan a moment later.
 */
export async function orphanRules(): Promise<string[]> {
  const look = async () => {
    const ids = ruleIds((await run('nft', ['list', 'table', 'inet', TABLE])).stdout);
    const nets = new Set((await docker('network', 'ls', '--format', '{{.Name}}')).stdout.split('\n'));
    return ids.filter((id) => !nets.has(`sbx-${id}`));
  };
  const first = await look();
  if (first.length === 0) return first;
  await sleep(2000);
  const again = new Set(await look());
  return first.filter((t) => again.has(t));
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** curl, the real client: returns status, headers (lower-case names) and body. */
export async function curl(args: string[], opts: RunOptions = {}): Promise<{ status: number; headers: Record<string, string>; body: string; code: number }> {
  // -i puts the response head(s) before the body (one per redirect followed).
  const r = await run('curl', ['-s', '-S', '-i', '--max-time', '30', ...args], opts);
  let rest = r.stdout;
  let last = '';
  while (/^HTTP\/[\d.]+ \d+/.test(rest)) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    last = rest.slice(0, end);
    rest = rest.slice(end + 4);
  }
  const headers: Record<string, string> = {};
  for (const line of last.split('\r\n').slice(1)) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status: Number(/^HTTP\/[\d.]+ (\d+)/.exec(last)?.[1] ?? 0), headers, body: rest, code: r.code };
}

/** Polls until fn() is true (bounded), for servers starting up inside sandboxes. */
export async function eventually(fn: () => Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/**
 * Sends SIGINT to `sbx create` after each delay and checks that the world then holds a whole
 * sandbox or nothing of it; at least one create must have been interrupted (exit 130).
 */
export async function interruptCreates(world: World, prefix: string, delays: number[]): Promise<void> {
  let interrupted = 0;
  for (const delay of delays) {
    const name = `${prefix}-${delay}`;
    const child = world.spawn(['create', '--name', name, '--json']);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await sleep(delay);
    child.kill('SIGINT');
    const code = await exited;
    if (code === 130) {
      interrupted++;
      assert.match(stderr, /^error: interrupted/);
    }
    // A client killed outright (before its handler was in place) may leave the daemon rolling back.
    if (code !== 0 && code !== 130) await sleep(1500);
    const list = await world.json<any[]>(['ls']);
    const left = await world.leftovers();
    if (list.length === 0) {
      assert.deepEqual(left, { containers: [], networks: [], tables: [] }, `after SIGINT at ${delay}ms (exit ${code})`);
    } else {
      assert.notEqual(code, 130, 'an interrupted create must leave nothing');
      assert.equal(list[0].status, 'running');
      assert.equal(left.containers.length + left.networks.length, 2);
      await world.sbx(['rm', '-f', name]);
    }
  }
  assert.ok(interrupted > 0, 'at least one create was interrupted');
}

/** One line to an upper-casing TCP service through a local port, and the bytes it returns. */
export function talk(localPort: number, send: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = createConnection(localPort, '127.0.0.1');
    let got = '';
    s.setTimeout(10_000, () => s.destroy(new Error('no answer in 10 s')));
    s.on('data', (d) => {
      got += d;
      if (got.length >= send.length) {
        s.end();
        resolve(got);
      }
    });
    s.on('error', reject);
    s.write(send);
  });
}
