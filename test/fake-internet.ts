// A "fake internet" for egress tests: a network namespace reachable from the host (and so from
// containers, through the host's forwarding) that serves HTTP, HTTPS, UDP, a long-lived TCP port
// and DNS on test addresses (198.18.0.0/24, RFC 2544 benchmarking space, plus one link-local
// "metadata" address and one private-range host, 10.203.77.1, routed into the namespace by a /32;
// for IPv6 2001:2::1..5 in 2001:2::/48, RFC 5180 benchmarking space), so egress policies can be
// checked without touching the real network. 198.18.0.6 is one address with two names on it
// (vhost-a.test, vhost-b.test), as shared hosting has; its HTTP server logs every request.
// The servers are test/fixtures/fake_internet.py. Needs root; one fake internet at a time.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** What the fake DNS answers (A records; names are matched case-insensitively). */
export const FAKE_HOSTS = {
  'allowed.test': ['198.18.0.1'],
  'shared.test': ['198.18.0.1'],
  'denied.test': ['198.18.0.2'],
  'other.test': ['198.18.0.3'],
  'a.wild.test': ['198.18.0.4'],
  'b.wild.test': ['198.18.0.4'],
  'deep.x.wild.test': ['198.18.0.4'],
  'wild.test': ['198.18.0.5'],
  'multi.test': ['198.18.0.3', '198.18.0.5'],
  'ttl5.test': ['198.18.0.3'], // a first label "ttl<N>" sets the TTL to N seconds
  'meta.test': ['169.254.77.1'],
  // Two names on one address: what one may reach, the other must not ride on.
  'vhost-a.test': ['198.18.0.6'],
  'vhost-b.test': ['198.18.0.6'],
  // Names that point where a sandbox must not go: a private network, the host's loopback, the
  // host's own address on the fake internet's link (DNS rebinding).
  'private.test': ['10.203.77.1'],
  'rebind.test': ['127.0.0.1'],
  'hostip.test': ['198.19.255.1'],
} as const satisfies Record<string, readonly string[]>;

/** What the fake DNS answers for AAAA. A name in only one table answers the other type with NOERROR and no records. */
export const FAKE_HOSTS6 = {
  'allowed.test': ['2001:2::1'],
  'denied.test': ['2001:2::2'],
  'other.test': ['2001:2::3'],
  'v6only.test': ['2001:2::4'], // AAAA only
  'rebind.test': ['::1'],
} as const satisfies Record<string, readonly string[]>;

/** The IPv6 test hosts (HTTP 80/8080, TLS 443, UDP echo 9999, hold 7000, like the IPv4 ones), as Python prints them. */
export const FAKE_HOST6_IPS = ['2001:2::1', '2001:2::2', '2001:2::3', '2001:2::4', '2001:2::5'] as const;

/** TTL of every record, except names whose first label is "ttl<N>". */
export const FAKE_TTL = 60;
/** The fake DNS server (UDP and TCP). */
export const FAKE_DNS_IP = '198.18.0.53';
/** The link-local address playing a cloud metadata service (HTTP on 80). */
export const FAKE_METADATA_IP = '169.254.77.1';
/** The address of vhost-a.test and vhost-b.test (HTTP on 80 and 8080, TLS on 443, like the others). */
export const FAKE_VHOST_IP = '198.18.0.6';
/** A host in a private range (HTTP on 80 and 8080, UDP echo on 9999 and 8080), as a LAN server would be. */
export const FAKE_PRIVATE_IP = '10.203.77.1';
/** The host's own address on the link to the fake internet (a host address that is not private). */
export const FAKE_HOST_LINK_IP = '198.19.255.1';

export interface FakeInternet {
  /** The network namespace's name (sbxfi-…). */
  ns: string;
  /** "198.18.0.53:53", for a DNS forwarder's upstream. */
  dnsUpstream: string;
  hosts: typeof FAKE_HOSTS;
  hosts6: typeof FAKE_HOSTS6;
  /** Every name the fake DNS was asked for, lower case, oldest first. */
  queries(): Promise<string[]>;
  clearQueries(): Promise<void>;
  /** Every HTTP request the servers saw, oldest first: "<local-ip> <port> <Host or -> <method> <target>". */
  requests(): Promise<string[]>;
  clearRequests(): Promise<void>;
  /** Removes it all (process, namespace, veth, routes, temp dir); safe to call twice. */
  stop(): Promise<void>;
}

const SERVERS = resolve(import.meta.dirname, 'fixtures', 'fake_internet.py');
const SERVER_IPS = ['198.18.0.1', '198.18.0.2', '198.18.0.3', '198.18.0.4', '198.18.0.5', FAKE_VHOST_IP, FAKE_DNS_IP, FAKE_METADATA_IP, FAKE_PRIVATE_IP];
const HOST_IP = FAKE_HOST_LINK_IP;
const NS_IP = '198.19.255.2';
const ROUTES = ['198.18.0.0/24', `${FAKE_METADATA_IP}/32`, `${FAKE_PRIVATE_IP}/32`];
const HOST_IP6 = 'fd5c::1';
const NS_IP6 = 'fd5c::2';
const ROUTES6 = ['2001:2::/48'];
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

const ip = (...args: string[]) => execFileP('ip', args);
/** For cleanup: runs ip synchronously, ignoring failures (the thing may be gone already). */
function ipQuiet(...args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return '';
  }
}

/** Removes whatever a crashed earlier run left: namespaces (and their processes), veths, temp dirs, routes. */
function removeLeftovers(): void {
  for (const line of ipQuiet('netns', 'list').split('\n')) {
    const ns = line.split(' ')[0];
    if (!ns?.startsWith('sbxfi-')) continue;
    for (const pid of ipQuiet('netns', 'pids', ns).split('\n').filter(Boolean)) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {}
    }
    ipQuiet('netns', 'del', ns);
  }
  for (const m of ipQuiet('-o', 'link', 'show').matchAll(/^\d+: (sbxfi[0-9a-f]{4})[@:]/gm)) ipQuiet('link', 'del', m[1]!);
  for (const name of readdirSync(tmpdir())) if (name.startsWith('sbxfi-')) rmSync(join(tmpdir(), name), { recursive: true, force: true });
  // Whatever they point at (several stale routes are possible): delete until none is left.
  for (const route of ROUTES) {
    for (let i = 0; i < 10 && ipQuiet('route', 'show', route).trim(); i++) ipQuiet('route', 'del', route);
  }
  for (const route of ROUTES6) {
    for (let i = 0; i < 10 && ipQuiet('-6', 'route', 'show', route).trim(); i++) ipQuiet('-6', 'route', 'del', route);
  }
}

let active: FakeInternet | undefined;

export async function startFakeInternet(): Promise<FakeInternet> {
  if (active) throw new Error('a fake internet is already running in this process; stop() it first');
  removeLeftovers();
  const tag = randomBytes(4).toString('hex');
  const ns = `sbxfi-${tag}`;
  const veth = `sbxfi${tag.slice(0, 4)}`;
  const dir = mkdtempSync(join(tmpdir(), 'sbxfi-'));
  const log = join(dir, 'queries.log');
  const requestLog = join(dir, 'requests.log');
  let child: ChildProcess | undefined;
  let stopped = false;

  // Synchronous, so that it also works from the 'exit' handler. Deleting the host end of the
  // veth removes both ends and the routes through it, even while the namespace is still alive.
  const cleanupSync = () => {
    if (stopped) return;
    stopped = true;
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    ipQuiet('link', 'del', veth);
    for (const route of ROUTES) ipQuiet('route', 'del', route, 'via', NS_IP);
    for (const route of ROUTES6) ipQuiet('-6', 'route', 'del', route, 'via', NS_IP6);
    ipQuiet('netns', 'del', ns);
    rmSync(dir, { recursive: true, force: true });
    process.off('exit', cleanupSync);
    for (const sig of SIGNALS) process.off(sig, onSignal);
    if (active === fi) active = undefined;
  };
  // A test process killed by a signal runs no 'exit' handlers: clean up, then die of the signal
  // as before (unless someone else handles it).
  const onSignal = (sig: NodeJS.Signals) => {
    cleanupSync();
    if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  };
  process.on('exit', cleanupSync);
  for (const sig of SIGNALS) process.once(sig, onSignal);

  const fi: FakeInternet = {
    ns,
    dnsUpstream: `${FAKE_DNS_IP}:53`,
    hosts: FAKE_HOSTS,
    hosts6: FAKE_HOSTS6,
    async queries() {
      return readFileSync(log, 'utf8').split('\n').filter(Boolean);
    },
    async clearQueries() {
      writeFileSync(log, ''); // python opens the file per line, in append mode
    },
    async requests() {
      return readFileSync(requestLog, 'utf8').split('\n').filter(Boolean);
    },
    async clearRequests() {
      writeFileSync(requestLog, '');
    },
    async stop() {
      const c = child;
      const exited = c && c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined;
      c?.ref(); // until its exit is seen, or the process could end with stop() unsettled
      cleanupSync();
      await exited;
    },
  };
  active = fi;

  try {
    await execFileP('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=fake.test',
      '-addext', 'subjectAltName=DNS:*.test,DNS:*.wild.test,DNS:allowed.test,IP:198.18.0.1,IP:2001:2::1',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'),
    ]);

    // Containers reach the namespace through the host, so the host must forward (Docker's default).
    if (readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim() !== '1') writeFileSync('/proc/sys/net/ipv4/ip_forward', '1');
    await ip('netns', 'add', ns);
    // IPv6 on in the namespace (all, default: the veth end created in it next inherits default).
    // /proc/sys/net belongs to the network namespace of whoever opens it.
    const nsSysctl = (...keys: string[]) =>
      execFileP('ip', ['netns', 'exec', ns, 'sh', '-c', keys.map((k) => `echo 0 > /proc/sys/net/ipv6/conf/${k}/disable_ipv6`).join(' && ')]);
    await nsSysctl('all', 'default', 'lo');
    await ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    await nsSysctl('eth0');
    writeFileSync(`/proc/sys/net/ipv6/conf/${veth}/disable_ipv6`, '0');
    await ip('addr', 'add', `${HOST_IP}/30`, 'dev', veth);
    await ip('link', 'set', veth, 'up');
    const inNs = (...args: string[]) => ip('-n', ns, ...args);
    await inNs('link', 'set', 'lo', 'up');
    await inNs('addr', 'add', `${NS_IP}/30`, 'dev', 'eth0');
    await inNs('link', 'set', 'eth0', 'up');
    await inNs('route', 'add', 'default', 'via', HOST_IP);
    // nodad: usable at once, not "tentative" for a second or so of duplicate address detection.
    await ip('-6', 'addr', 'add', `${HOST_IP6}/64`, 'dev', veth, 'nodad');
    await inNs('-6', 'addr', 'add', `${NS_IP6}/64`, 'dev', 'eth0', 'nodad');
    await inNs('-6', 'route', 'add', 'default', 'via', HOST_IP6, 'dev', 'eth0');
    // The server addresses live on lo: local delivery does not care which interface a packet came in on.
    for (const addr of SERVER_IPS) await inNs('addr', 'add', `${addr}/32`, 'dev', 'lo');
    for (const addr of FAKE_HOST6_IPS) await inNs('-6', 'addr', 'add', `${addr}/128`, 'dev', 'lo');
    for (const route of ROUTES) await ip('route', 'replace', route, 'via', NS_IP, 'dev', veth);
    for (const route of ROUTES6) await ip('-6', 'route', 'replace', route, 'via', NS_IP6, 'dev', veth);

    const udpIps = [...SERVER_IPS.filter((a) => a !== FAKE_DNS_IP), ...FAKE_HOST6_IPS];
    const c = spawn('ip', ['netns', 'exec', ns, 'python3', SERVERS, join(dir, 'cert.pem'), join(dir, 'key.pem'), log, FAKE_DNS_IP, udpIps.join(','), JSON.stringify(FAKE_HOSTS), JSON.stringify(FAKE_HOSTS6), requestLog], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    child = c;
    // The servers exit when their stdin closes, i.e. with this process, however it ends. Nothing
    // here keeps the test process alive: a forgotten stop() still ends in the 'exit' cleanup.
    c.unref();
    for (const s of [c.stdin, c.stdout, c.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
    await new Promise<void>((ready, fail) => {
      let out = '';
      let err = '';
      const timer = setTimeout(() => fail(new Error(`fake internet: not ready after 15s\n${err}`)), 15_000);
      c.stderr!.on('data', (d) => (err = (err + d).slice(-4000)));
      c.stdout!.on('data', (d) => {
        out += d;
        if (out.split('\n').includes('ready')) {
          clearTimeout(timer);
          ready();
        }
      });
      c.once('exit', (code, sig) => {
        clearTimeout(timer);
        fail(new Error(`fake internet: servers exited (${sig ?? code})\n${err}`));
      });
      c.once('error', (e) => {
        clearTimeout(timer);
        fail(e);
      });
    });
  } catch (e) {
    await fi.stop();
    throw e;
  }
  return fi;
}
