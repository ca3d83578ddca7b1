// A second Docker engine in a network namespace of its own: what sbx meets when DOCKER_HOST points
// at another machine (or Docker Desktop's VM). Its bridges, and so its sandboxes' traffic, are in
// that namespace; the host reaches it over a veth pair on a /30 picked from 10.250.0.0/16 where it
// collides with nothing. The host forwards between it and the fake internet (test/fake-internet.ts,
// interfaces sbxfi*) only, statefully; everything else it would send through the host is dropped,
// so nothing of it leaves the machine (its containers' DNS goes to the fake internet's server).
// Needs root. close() removes it all; removeStaleRemoteEngines() sweeps what killed runs left.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { makeTlsCerts } from './tls-certs.ts';

const execFileP = promisify(execFile);

export interface RemoteEngine {
  /** The network namespace (sbxre-<tag>) the engine runs in. */
  netns: string;
  /** Its API socket (in the host's file system: the engine shares everything but the network). */
  socket: string;
  /** `unix://` + socket, for DOCKER_HOST. */
  dockerHost: string;
  /** The engine host's address on the veth, reachable from this host. */
  hostAddress: string;
  /** With `tcp`: `tcp://<hostAddress>:2376` (TLS) or `:2375` (plain), for DOCKER_HOST. */
  tcpHost?: string;
  /** With `tcp: { tls: true }`: the client's ca.pem, cert.pem, key.pem, for DOCKER_CERT_PATH. */
  certPath?: string;
  /** The engine's pid (a new one after restart()). */
  readonly pid: number;
  /**
   * Stops the engine (SIGTERM: it stops its containers, as a host's shutdown does) and starts it
   * again on the same data root, namespace and socket; resolves once it answers. Containers with
   * a restart policy (always, unless-stopped) come back; the others stay stopped.
   */
  restart(): Promise<void>;
  /** Removes its containers, the engine, the namespace, veth, firewall rules and files; idempotent. */
  close(): Promise<void>;
}

export interface RemoteEngineOptions {
  /**
   * The engine's docker0 address (dockerd --bip). By default one in 10.251.0.0/16; pass the main
   * engine's (e.g. 172.17.0.1/16) for a remote host that looks like this one, as two default
   * installs do.
   */
  bip?: string;
  /**
   * Also listen on TCP at the engine host's address: `tls: true`, on 2376 with --tlsverify (a CA,
   * server and client certificates made in its temp dir); `tls: false`, plain on 2375.
   */
  tcp?: { tls: boolean };
}

const PREFIX = 'sbxre-';
/** Temp dirs are /tmp/sbxre-<tag>: short, for unix socket paths (108 bytes) under the exec root. */
const dirOf = (tag: string) => `/tmp/${PREFIX}${tag}`;
const vethOf = (tag: string) => `sbxre${tag}`;
/** Marks the host's firewall rules of one engine, so that close() and the sweep find them. */
const commentOf = (tag: string) => `${PREFIX}${tag}`;

/** Runs a command synchronously, ignoring failures (for cleanup: the thing may be gone already). */
function quiet(file: string, args: string[], timeout = 30_000): string {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout });
  } catch {
    return '';
  }
}

/** Whether a process runs (a zombie does not: our own dockerd is not reaped while we wait synchronously). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

// ---- addresses --------------------------------------------------------------------------

const toInt = (a: string) => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);

function overlaps(a: string, b: string): boolean {
  const [an, al] = a.split('/') as [string, string | undefined];
  const [bn, bl] = b.split('/') as [string, string | undefined];
  const len = Math.min(Number(al ?? 32), Number(bl ?? 32));
  if (len === 0) return true;
  const shift = 32 - len;
  return Math.floor(toInt(an) / 2 ** shift) === Math.floor(toInt(bn) / 2 ** shift);
}

/** Every IPv4 prefix the host uses: its addresses and its routes (not the default route). */
function hostPrefixes(): string[] {
  const out: string[] = [];
  for (const m of quiet('ip', ['-4', '-o', 'addr', 'show']).matchAll(/inet (\d+\.\d+\.\d+\.\d+\/\d+)/g)) out.push(m[1]!);
  for (const line of quiet('ip', ['-4', 'route', 'show', 'table', 'all']).split('\n')) {
    const dest = line.split(' ').find((w) => /^\d+\.\d+\.\d+\.\d+(\/\d+)?$/.test(w));
    if (dest && !line.startsWith('default')) out.push(dest);
  }
  return out;
}

/** A /30 in 10.250.0.0/16 and a docker0 /24 in 10.251.0.0/16 that collide with nothing on the host. */
function pickAddresses(): { veth: string; bip: string } {
  const used = hostPrefixes();
  for (let i = 0; i < 200; i++) {
    const [x, y] = randomBytes(2);
    const base = `10.250.${x}.${(y! % 64) * 4}`;
    const bip = `10.251.${x}.1/24`;
    if (!used.some((p) => overlaps(p, `${base}/30`) || overlaps(p, bip))) return { veth: base, bip };
  }
  throw new Error('remote engine: no free /30 in 10.250.0.0/16');
}

const plus = (addr: string, n: number) => addr.replace(/\d+$/, (o) => String(Number(o) + n));

// ---- firewall ---------------------------------------------------------------------------

/**
 * The host's forwarding for one engine (iptables, FORWARD, before Docker's jump to DOCKER-USER):
 * to the fake internet and its answers; nothing else, either way.
 */
function firewallRules(tag: string): string[][] {
  const veth = vethOf(tag);
  const c = ['-m', 'comment', '--comment', commentOf(tag)];
  return [
    ['-i', veth, '-o', 'sbxfi+', ...c, '-j', 'ACCEPT'],
    ['-i', 'sbxfi+', '-o', veth, '-m', 'conntrack', '--ctstate', 'ESTABLISHED,RELATED', ...c, '-j', 'ACCEPT'],
    ['-i', veth, ...c, '-j', 'DROP'],
    ['-o', veth, ...c, '-j', 'DROP'],
  ];
}

/** Deletes every FORWARD rule carrying the engine's comment (whatever their number). */
function removeFirewall(tag: string): void {
  for (const line of quiet('iptables', ['-w', '-S', 'FORWARD']).split('\n')) {
    if (!line.startsWith('-A FORWARD ') || !line.includes(`--comment ${commentOf(tag)}`)) continue;
    // -S prints the rule as -A would take it; the comment has no spaces, so splitting is safe.
    quiet('iptables', ['-w', '-D', ...line.slice('-A '.length).split(' ')]);
  }
}

// ---- lifetime ---------------------------------------------------------------------------

/** Removes everything of one engine (by its tag); synchronous, so that it also runs on exit. */
function teardown(tag: string, pid?: number): void {
  const dir = dirOf(tag);
  const socket = join(dir, 'd.sock');
  const ns = `${PREFIX}${tag}`;
  pid ??= Number(quiet('cat', [join(dir, 'd.pid')]).trim()) || undefined;
  if (pid && alive(pid) && existsSync(socket)) {
    // Containers first: a killed engine would leave their processes running.
    const ids = quiet('docker', ['-H', `unix://${socket}`, 'ps', '-aq'], 15_000).split('\n').filter(Boolean);
    if (ids.length) quiet('docker', ['-H', `unix://${socket}`, 'rm', '-f', ...ids], 30_000);
  }
  if (pid && alive(pid)) {
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 15_000;
    while (alive(pid) && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  }
  // Whatever still runs in the namespace (its containerd, shims): gone with it.
  for (const p of quiet('ip', ['netns', 'pids', ns]).split('\n').filter(Boolean)) {
    try {
      process.kill(Number(p), 'SIGKILL');
    } catch {}
  }
  removeFirewall(tag);
  quiet('ip', ['link', 'del', vethOf(tag)]);
  quiet('ip', ['netns', 'del', ns]);
  // Mounts the engine left under its roots (deepest first), so rm does not reach into them.
  const mounts = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1]?.replace(/\\040/g, ' '))
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const m of mounts) quiet('umount', ['-l', m]);
  rmSync(dir, { recursive: true, force: true });
}

/**
 * Removes what killed test runs left: every sbxre-* namespace, veth, firewall rule and temp dir
 * whose test process is gone (an engine of a live test process, this one included, is left alone).
 */
export function removeStaleRemoteEngines(): void {
  const tags = new Set<string>();
  for (const line of quiet('ip', ['netns', 'list']).split('\n')) {
    const m = /^sbxre-([0-9a-f]{4})\b/.exec(line);
    if (m) tags.add(m[1]!);
  }
  for (const name of readdirSync('/tmp')) {
    const m = /^sbxre-([0-9a-f]{4})$/.exec(name);
    if (m) tags.add(m[1]!);
  }
  for (const m of quiet('ip', ['-o', 'link', 'show']).matchAll(/^\d+: sbxre([0-9a-f]{4})[@:]/gm)) tags.add(m[1]!);
  for (const m of quiet('iptables', ['-w', '-S', 'FORWARD']).matchAll(/--comment sbxre-([0-9a-f]{4})\b/g)) tags.add(m[1]!);
  for (const tag of tags) {
    const owner = Number(quiet('cat', [join(dirOf(tag), 'owner')]).trim());
    if (owner && alive(owner)) continue; // this process's own engines are closed by it (or on its exit)
    teardown(tag);
  }
}

/**
 * What of any remote engine is still there (for tests that assert they left nothing): sbxre-*
 * namespaces, processes run from an engine's directory (dockerd, its containerd, shims), the
 * host's firewall rules for one, and veths.
 */
export function remoteEngineLeftovers(): { netns: string[]; processes: string[]; firewall: string[]; links: string[] } {
  const processes = readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`/tmp/${PREFIX}`);
      } catch {
        return false;
      }
    });
  return {
    netns: quiet('ip', ['netns', 'list']).split('\n').filter((l) => l.startsWith(PREFIX)),
    processes,
    firewall: quiet('iptables', ['-w', '-S', 'FORWARD']).split('\n').filter((l) => l.includes(`--comment ${PREFIX}`)),
    links: [...quiet('ip', ['-o', 'link', 'show']).matchAll(/^\d+: (sbxre[0-9a-f]{4})[@:]/gm)].map((m) => m[1]!),
  };
}

const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** Starts a Docker engine in a network namespace of its own (takes a few seconds). */
export async function startRemoteEngine(options: RemoteEngineOptions = {}): Promise<RemoteEngine> {
  removeStaleRemoteEngines();
  let tag: string;
  do tag = randomBytes(2).toString('hex');
  while (existsSync(dirOf(tag)) || existsSync(`/var/run/netns/${PREFIX}${tag}`));
  const dir = dirOf(tag);
  mkdirSync(dir, { mode: 0o700 });
  writeFileSync(join(dir, 'owner'), `${process.pid}\n`);
  const netns = `${PREFIX}${tag}`;
  const veth = vethOf(tag);
  const socket = join(dir, 'd.sock');
  const addrs = pickAddresses();
  const hostSide = plus(addrs.veth, 1);
  const nsSide = plus(addrs.veth, 2);
  const tcpHost = options.tcp ? `tcp://${nsSide}:${options.tcp.tls ? 2376 : 2375}` : undefined;
  let certs: ReturnType<typeof makeTlsCerts> | undefined;
  let pid: number | undefined;
  let closed = false;

  const shutdown = () => {
    if (closed) return;
    closed = true;
    teardown(tag, pid);
    process.off('exit', shutdown);
    for (const sig of SIGNALS) process.off(sig, onSignal);
  };
  // A test killed by a signal runs no 'exit' handlers: clean up, then die of the signal as before.
  const onSignal = (sig: NodeJS.Signals) => {
    shutdown();
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  process.on('exit', shutdown);
  for (const sig of SIGNALS) process.once(sig, onSignal);

  /** Starts dockerd in the namespace and waits until it answers (60 s); resolves with its pid. */
  const launch = async (): Promise<number> => {
    const log = openSync(join(dir, 'dockerd.log'), 'a');
    // nsenter, not `ip netns exec`: that remounts /sys, and dockerd then finds no cgroups.
    const child = spawn(
      'nsenter',
      [
        `--net=/var/run/netns/${netns}`, '--', 'dockerd',
        '--config-file', join(dir, 'daemon.json'),
        '--data-root', join(dir, 'data'),
        '--exec-root', join(dir, 'x'),
        '--pidfile', join(dir, 'd.pid'),
        '-H', `unix://${socket}`,
        ...(tcpHost ? ['-H', tcpHost] : []),
        ...(certs ? ['--tlsverify', '--tlscacert', certs.ca, '--tlscert', certs.serverCert, '--tlskey', certs.serverKey] : []),
        // Plain TCP said explicitly: dockerd otherwise waits 15 s to show its warning.
        ...(tcpHost && !certs ? ['--tls=false'] : []),
        '--bip', options.bip ?? addrs.bip,
        '--default-address-pool', 'base=10.252.0.0/16,size=24',
        '--iptables=true',
        '--ip-masq=true',
        // Its containers ask the fake internet's DNS server (the only place they may reach).
        '--dns', '198.18.0.53',
        // Its own containerd (under the exec root) in namespaces of its own: nothing shared.
        '--containerd-namespace', `sbxre${tag}`,
        '--containerd-plugins-namespace', `sbxre${tag}-plugins`,
      ],
      { detached: true, stdio: ['ignore', log, log] },
    );
    closeSync(log);
    child.unref();
    if (!child.pid) throw new Error('remote engine: could not start dockerd');
    const deadline = Date.now() + 60_000;
    for (;;) {
      const exited = child.exitCode !== null || child.signalCode !== null;
      const ok = !exited && (await execFileP('docker', ['-H', `unix://${socket}`, 'info', '--format', '{{.ID}}']).then(() => true, () => false));
      if (ok) return child.pid;
      if (exited || Date.now() > deadline) {
        const tail = readFileSync(join(dir, 'dockerd.log'), 'utf8').split('\n').slice(-20).join('\n');
        throw new Error(`remote engine: dockerd ${exited ? 'exited' : 'did not answer in 60s'}; its log:\n${tail}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  const ip = (...args: string[]) => execFileP('ip', args);
  try {
    if (readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() !== '1') writeFileSync('/proc/sys/net/ipv4/ip_forward', '1');
    await ip('netns', 'add', netns);
    await ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns);
    await ip('addr', 'add', `${hostSide}/30`, 'dev', veth);
    await ip('link', 'set', veth, 'up');
    await ip('-n', netns, 'link', 'set', 'lo', 'up');
    await ip('-n', netns, 'addr', 'add', `${nsSide}/30`, 'dev', 'eth0');
    await ip('-n', netns, 'link', 'set', 'eth0', 'up');
    await ip('-n', netns, 'route', 'add', 'default', 'via', hostSide);
    for (const rule of firewallRules(tag).reverse()) await execFileP('iptables', ['-w', '-I', 'FORWARD', '1', ...rule]);

    // Not /etc/docker/daemon.json, the main engine's. An id of its own (not /etc/docker/key.json's,
    // which the two engines would share on one file system), as another host has: the agent tells
    // the engine it was started for from the one whose socket it was given by that id.
    writeFileSync(join(dir, 'daemon.json'), `${JSON.stringify({ 'deprecated-key-path': join(dir, 'key.json') })}\n`);
    if (options.tcp?.tls) certs = makeTlsCerts(join(dir, 'tls'), nsSide);
    pid = await launch();
  } catch (err) {
    shutdown();
    throw err;
  }
  return {
    netns,
    socket,
    dockerHost: `unix://${socket}`,
    hostAddress: nsSide,
    ...(tcpHost ? { tcpHost } : {}),
    ...(certs ? { certPath: certs!.clientDir } : {}),
    get pid() {
      return pid!;
    },
    async restart() {
      if (closed) throw new Error('remote engine: closed');
      const old = pid!;
      process.kill(old, 'SIGTERM');
      const deadline = Date.now() + 60_000;
      while (alive(old)) {
        if (Date.now() > deadline) throw new Error(`remote engine: dockerd ${old} did not stop in 60s`);
        await new Promise((r) => setTimeout(r, 100));
      }
      pid = await launch();
    },
    async close() {
      shutdown();
    },
  };
}

/** Copies images from the main engine into `engine` (docker save | docker load); nothing is cached. */
export async function loadImages(engine: RemoteEngine, tags: string[] = ['sbx/base:bookworm']): Promise<void> {
  for (const tag of tags) {
    await new Promise<void>((resolve, reject) => {
      const sh = spawn('bash', ['-o', 'pipefail', '-c', 'docker save "$1" | docker -H "$2" load -q', 'load', tag, engine.dockerHost], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      sh.stderr.on('data', (d) => (err += d));
      sh.once('error', reject);
      sh.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`remote engine: could not load ${tag} (exit ${code}): ${err.trim()}`))));
    });
  }
}
