// The code that parses untrusted traffic runs as the unprivileged user sbx-gateway, seen from
// outside. The egress worker (sbx's DNS forwarder and Host/SNI proxy, what sandboxes send): who
// listens on the gateway's egress ports (ss, /proc), that DNS and the proxy still serve and refuse
// from inside a sandbox, that a tightening update still cuts a held proxied connection before it
// returns, and that killing the worker leaves egress working again (a new worker, the rules on its
// ports), never silently broken. nginx's workers (what the URLs' users send): their user, their
// socket directory, public ports through the fast path, and that only they (sbx-gateway with its
// own group), not the egress worker's credentials, may open connections into a sandbox. The user is made as scripts/setup makes it when it is missing (and
// removed again after). Only one fake internet can exist on the machine: run as
//   flock /tmp/sbx-fi.lock node --test test/integration/privileges.test.ts
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { chainOf, curl, eventually, run, World } from '../helpers.ts';
import { startFakeInternet, type FakeInternet } from '../fake-internet.ts';
import { guardTable } from '../../src/net/listener-guard.ts';

let fi: FakeInternet;
let world: World;
let madeUser = false;
let uid = -1;
let gid = -1;
/** The egress worker's group: none of sbx-gateway's (nogroup). */
const NO_GROUP = 65534;

before(async () => {
  if ((await run('getent', ['passwd', 'sbx-gateway'])).code !== 0) {
    const r = await run('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', 'sbx-gateway']);
    assert.equal(r.code, 0, r.stderr);
    madeUser = true;
  }
  [uid, gid] = (await run('getent', ['passwd', 'sbx-gateway'])).stdout.split(':').slice(2, 4).map(Number) as [number, number];
  fi = await startFakeInternet();
  world = new World({ SBX_DNS_UPSTREAM: fi.dnsUpstream });
});
after(async () => {
  await world?.cleanup();
  await fi?.stop();
  if (madeUser) await run('userdel', ['sbx-gateway']);
});

/** gateway.json ({} while there is none: a gateway that stopped removes it). */
function state(): any {
  try {
    return JSON.parse(readFileSync(join(world.home, 'gateway.json'), 'utf8'));
  } catch {
    return {};
  }
}

/** The pid of the process listening on a port (`ss`), per protocol. */
async function listener(proto: 'tcp' | 'udp', port: number): Promise<number | undefined> {
  const r = await run('ss', ['-Hlnp', proto === 'tcp' ? '-t' : '-u', 'sport', '=', `:${port}`]);
  const m = /pid=(\d+)/.exec(r.stdout);
  return m ? Number(m[1]) : undefined;
}

/** Uid, Gid (real, effective, saved, fs), PPid and CapEff of a process. */
function status(pid: number): { uid: number[]; gid: number[]; ppid: number; capEff: string; groups: string } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(text)?.[1]?.trim() ?? '';
  return { uid: field('Uid').split(/\s+/).map(Number), gid: field('Gid').split(/\s+/).map(Number), ppid: Number(field('PPid')), capEff: field('CapEff'), groups: field('Groups') };
}

/** The one process behind all four egress listeners (DNS over UDP and TCP, HTTP, TLS). */
const readlinkOr = (path: string) => {
  try {
    return readlinkSync(path);
  } catch {
    return '';
  }
};

async function egressPid(): Promise<number> {
  const l = state().egress;
  const pids = [await listener('udp', l.dns), await listener('tcp', l.dns), await listener('tcp', l.http), await listener('tcp', l.tls)];
  assert.ok(pids[0], `something listens on ${l.dns}/udp`);
  assert.deepEqual(new Set(pids).size, 1, `one process holds every egress listener: ${pids.join(', ')}`);
  return pids[0]!;
}

const boxes = new Set<string>();
async function sh(box: string, script: string): Promise<string> {
  return (await world.sbx(['exec', box, '--', 'sh', '-c', script])).stdout.trim();
}
/** curl inside the sandbox: "<status> <body>" (status 000 when it failed to connect). */
async function get(box: string, url: string): Promise<string> {
  const r = await world.sbx(['exec', box, '--', 'curl', '-s', '-k', '-m', '5', '-w', ' %{http_code}', url]);
  const m = /^([^]*) (\d{3})$/.exec(r.stdout);
  return m ? `${m[2]} ${m[1]!.trim()}`.trim() : `? ${r.stdout}`;
}

/** The worker's established TCP connections to an address and port (its upstream side). */
async function workerConnections(pid: number, to: string): Promise<number> {
  const r = await run('ss', ['-Htnp', 'state', 'established', 'dst', to]);
  return r.stdout.split('\n').filter((l) => l.includes(`pid=${pid},`)).length;
}

describe('the parsers of untrusted traffic run as sbx-gateway', () => {
  before(async () => {
    await world.json(['gateway', 'start']);
    await world.json(['create', '--name', 'web', '--block-network', '--allow-out', 'allowed.test']);
    boxes.add('web');
    await world.put('web', 'probe.py', '/probe.py');
    await world.json(['create', '--name', 'pub', '-p', '8000', '--', 'python3', '-m', 'http.server', '8000']);
    boxes.add('pub');
  });

  it('the process on the egress ports is sbx-gateway, no capabilities, a child of the root gateway', async () => {
    const s = state();
    const pid = await egressPid();
    assert.notEqual(pid, s.pid, 'not the gateway itself');
    const st = status(pid);
    assert.deepEqual(st.uid, [uid, uid, uid, uid], 'real, effective, saved and fs uid');
    assert.deepEqual(st.gid, [NO_GROUP, NO_GROUP, NO_GROUP, NO_GROUP], "not sbx-gateway's group, which is the nginx workers'");
    assert.equal(st.groups, '', 'no supplementary groups');
    assert.equal(st.capEff, '0000000000000000');
    assert.equal(st.ppid, s.pid);
    assert.deepEqual(status(s.pid).uid, [0, 0, 0, 0], 'the gateway keeps root (nft, conntrack, Docker)');
    const json = await world.json(['gateway', 'status']);
    assert.equal(json.egressUser, 'sbx-gateway');
    for (const key of ['running', 'pid', 'host', 'port', 'domain', 'url', 'startedAt', 'engine', 'dnsUpstream', 'log']) assert.ok(key in json, `status keeps ${key}`);
    assert.match(readFileSync(join(world.home, 'gateway.log'), 'utf8'), new RegExp(`egress: the DNS forwarder and the proxy run as sbx-gateway \\(uid ${uid}, pid ${pid}\\)`));
  });

  it("the gateway's netlink socket to the firewall (libnftables) is its own: the egress worker and nginx hold none", async () => {
    const s = state();
    assert.match(readFileSync(join(world.home, 'gateway.log'), 'utf8'), /egress rules: libnftables in this process\n/);
    // Netfilter netlink sockets (protocol 12) by inode, and the sockets a process holds.
    const nfnetlink = new Set(readFileSync('/proc/net/netlink', 'utf8').trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f[1] === '12').map((f) => f.at(-1)!));
    // An old nginx worker may end (after a reload) between the listing and this look: it holds nothing then.
    const fds = (pid: number) => {
      try {
        return readdirSync(`/proc/${pid}/fd`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
        throw err;
      }
    };
    const held = (pid: number) => fds(pid).map((fd) => /^socket:\[(\d+)\]$/.exec(readlinkOr(`/proc/${pid}/fd/${fd}`))?.[1]).filter((i): i is string => !!i && nfnetlink.has(i));
    assert.ok(held(s.pid).length >= 1, 'the gateway holds one (control: the check sees it)');
    const master = Number(readFileSync(join(world.home, 'run', 'nginx.pid'), 'utf8'));
    const nginxWorkers = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).map(Number);
    for (const pid of [await egressPid(), master, ...nginxWorkers]) assert.deepEqual(held(pid), [], `process ${pid}`);
  });

  it("nginx's workers run as sbx-gateway, reach the gateway's socket in its group's directory, and serve public ports", async () => {
    const s = state();
    assert.equal(s.engine, 'nginx');
    const master = Number(readFileSync(join(world.home, 'run', 'nginx.pid'), 'utf8'));
    assert.deepEqual(status(master).uid, [0, 0, 0, 0], 'the master stays root (it binds the port, reads the configuration)');
    // A worker forked by a reload (routes are added 300 ms after a change) is root for the moment
    // before it drops to its user: the workers are looked at until none is in that moment.
    const ids = () => {
      const workers = readFileSync(`/proc/${master}/task/${master}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
      return workers.map((w) => {
        try {
          return { w, uid: status(w).uid, gid: status(w).gid };
        } catch {
          return { w, uid: [uid, uid, uid, uid], gid: [gid, gid, gid, gid] }; // ended meanwhile
        }
      });
    };
    await eventually(async () => ids().length >= 1 && ids().every((x) => x.uid.every((u) => u === uid) && x.gid.every((g) => g === gid)), 'the workers to run as sbx-gateway', 5000);
    for (const x of ids()) {
      assert.deepEqual(x.uid, [uid, uid, uid, uid], `worker ${x.w}`);
      assert.deepEqual(x.gid, [gid, gid, gid, gid], `worker ${x.w}`);
    }
    const dir = /socket and temp files in (\/run\/sbx\/[0-9a-f]+)\)/.exec(readFileSync(join(world.home, 'gateway.log'), 'utf8'))?.[1];
    assert.ok(dir, 'the log names the workers\' directory');
    const d = statSync(dir);
    assert.deepEqual([d.uid, d.gid, d.mode & 0o777], [0, gid, 0o750]);
    const sock = statSync(join(dir, 'node.sock'));
    assert.deepEqual([sock.uid, sock.gid, sock.mode & 0o777], [0, gid, 0o660]);
    const url = (await world.json(['port', 'ls', 'pub']))[0].url;
    await eventually(async () => (await curl([url])).status === 200, 'the public port');
    // Added routes reach nginx after a short quiet time (fastpath.ts ADD_QUIET_MS); the Node gateway serves them meanwhile.
    await eventually(async () => /"8000-pub\.sbx\.localhost"/.test(readFileSync(join(world.home, 'run', 'nginx.conf'), 'utf8')), 'nginx to carry the port itself (the fast path)', 5000);
    assert.match((await curl([url])).body, /Directory listing/);
  });

  it("only root and nginx's workers open connections into a sandbox: not the egress worker's credentials, nor anyone else", async () => {
    const ip = (await world.json(['inspect', 'pub'])).ip;
    const as = async (ids: string[]) => (await run('setpriv', [...ids, '--clear-groups', 'curl', '-s', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', `http://${ip}:8000/`])).stdout;
    assert.equal(await as(['--reuid', String(uid), '--regid', String(gid)]), '200', "sbx-gateway with its own group (nginx's workers)");
    assert.equal(await as(['--reuid', String(uid), '--regid', String(NO_GROUP)]), '000', "sbx-gateway with the egress worker's group");
    assert.equal(await as(['--reuid', '65534', '--regid', '65534']), '000', 'nobody');
  });

  it('DNS and the proxy serve the sandbox: allowed.test over HTTP and HTTPS, another name refused with 403', async () => {
    assert.equal(await sh('web', 'python3 /probe.py resolve allowed.test'), 'ok 198.18.0.1');
    assert.match(await sh('web', 'python3 /probe.py resolve other.test'), /^fail/, 'block-all: other names do not resolve');
    assert.equal(await get('web', 'http://allowed.test/'), '200 198.18.0.1 80 allowed.test');
    assert.equal(await get('web', 'https://allowed.test/'), '200 198.18.0.1 443 allowed.test allowed.test');
    assert.equal(await get('web', 'http://other.test/'), '000', 'no address for a name that is not allowed');
    const r = await world.sbx(['exec', 'web', '--', 'curl', '-s', '-m', '5', '-w', ' %{http_code}', '--resolve', 'other.test:80:198.18.0.3', 'http://other.test/']);
    assert.equal(r.stdout, "sbx: other.test is not in this sandbox's egress allow list\n 403", 'a name that is not allowed, on an allowed address: 403 with the reason');
  });

  it('a tightening update cuts a held proxied connection before it returns', async () => {
    await world.json(['network', 'update', 'web', '--mode', 'block-all', '--allow-out', 'allowed.test', '--allow-out', 'other.test']);
    const pid = await egressPid();
    await sh('web', 'rm -f /tmp/holdhttp');
    await world.sbx(['exec', '-d', 'web', '--', 'python3', '/probe.py', 'holdhttp', 'allowed.test', '/tmp/holdhttp']);
    await eventually(async () => (await sh('web', 'cat /tmp/holdhttp')).includes('connected HTTP/1.1 200'), 'the kept-alive connection');
    assert.equal(await workerConnections(pid, '198.18.0.1:80'), 1, 'the worker holds the upstream side (control)');
    await world.json(['network', 'update', 'web', '--mode', 'block-all', '--allow-out', 'other.test']);
    // Checked the moment the update returned: the worker's side of the connection is gone already.
    assert.equal(await workerConnections(pid, '198.18.0.1:80'), 0, 'cut before network update returned');
    await eventually(async () => /cut/.test(await sh('web', 'cat /tmp/holdhttp')), 'the sandbox to see the cut', 3000);
    assert.equal(await get('web', 'http://other.test/'), '200 198.18.0.3 80 other.test');
    await world.json(['network', 'update', 'web', '--mode', 'block-all', '--allow-out', 'allowed.test']);
  });

  it("a worker killed with SIGKILL is replaced: on the home's own ports again, rules and guard on them, DNS and the proxy serve again", async () => {
    const before = state();
    const old = await egressPid();
    const served = () => readFileSync(join(world.home, 'gateway.log'), 'utf8').split(/egress: a new worker \(pid \d+\) serves/).length;
    const times = served();
    process.kill(old, 'SIGKILL');
    await eventually(async () => served() > times, 'the new worker to serve', 10_000);
    const after = state();
    // The dead worker's ports are free again, and each home takes its own first (low-ports.ts):
    // flows the kernel still translates to them reach the new worker.
    assert.deepEqual(after.egress, before.egress, 'the same ports');
    assert.equal(after.pid, before.pid, 'the same gateway');
    const pid = await egressPid();
    assert.notEqual(pid, old);
    assert.deepEqual(status(pid).uid, [uid, uid, uid, uid], 'the new worker is sbx-gateway too');
    // The sandbox's redirects and the listener guard name its ports.
    const id = (await world.json(['inspect', 'web'])).id;
    const rules = (await run('nft', chainOf(id, 'dnat'))).stdout;
    assert.match(rules, new RegExp(`tcp dport 80 redirect to :${after.egress.http}\\b`));
    assert.match(rules, new RegExp(`udp dport 53 redirect to :${after.egress.dns}\\b`));
    const guard = (await run('nft', ['list', 'table', 'inet', guardTable(world.home)])).stdout;
    assert.match(guard, new RegExp(`\\b${after.egress.tls}\\b`));
    if (after.egress.tls !== before.egress.tls) assert.doesNotMatch(guard, new RegExp(`\\b${before.egress.tls}\\b`));
    assert.equal(await sh('web', 'python3 /probe.py resolve allowed.test'), 'ok 198.18.0.1');
    assert.equal(await get('web', 'http://allowed.test/'), '200 198.18.0.1 80 allowed.test');
    assert.equal(await get('web', 'https://allowed.test/'), '200 198.18.0.1 443 allowed.test allowed.test');
    assert.match(readFileSync(join(world.home, 'gateway.log'), 'utf8'), new RegExp(`the worker \\(pid ${old}\\) was killed \\(SIGKILL\\): starting another`));
    assert.equal((await world.json(['gateway', 'status'])).running, true);
  });

  it('a worker that keeps dying stops the gateway (rules stay, status says so) and the next command starts it again', async () => {
    const gateway = state().pid;
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    for (let kills = 0; alive(gateway) && kills < 10; kills++) {
      const killed = await egressPid();
      process.kill(killed, 'SIGKILL');
      // A new worker is told by its pid: its ports are the home's own, the same as before.
      await eventually(async () => {
        const http = state().egress?.http;
        if (!alive(gateway)) return true;
        const holder = http === undefined ? undefined : await listener('tcp', http);
        return holder !== undefined && holder !== killed;
      }, 'a new worker or the gateway gone', 10_000);
    }
    await eventually(async () => !alive(gateway), 'the gateway to stop', 5000);
    assert.match(readFileSync(join(world.home, 'gateway.log'), 'utf8'), /deaths within a minute, egress is broken: the gateway stops/);
    assert.equal((await world.json(['gateway', 'status'])).running, false);
    const id = (await world.json(['inspect', 'web'])).id;
    assert.equal((await run('nft', chainOf(id))).code, 0, 'the rules stay in force');
    assert.equal(await get('web', 'http://allowed.test/'), '000', 'and web traffic fails closed');
    await world.json(['network', 'update', 'web', '--mode', 'block-all', '--allow-out', 'allowed.test']);
    assert.equal((await world.json(['gateway', 'status'])).running, true);
    assert.equal(await get('web', 'http://allowed.test/'), '200 198.18.0.1 80 allowed.test');
  });

  it('the worker goes with the gateway, and a stopped gateway leaves nothing running (nginx, guard)', async () => {
    const pid = await egressPid();
    const nginx = Number(readFileSync(join(world.home, 'run', 'nginx.pid'), 'utf8'));
    const gone = (p: number) => {
      try {
        process.kill(p, 0);
        return false;
      } catch {
        return true;
      }
    };
    // This gateway wrote the store itself (the update above): its signal handling must still run close().
    await world.sbx(['gateway', 'stop']);
    await eventually(async () => gone(pid), 'the worker to exit', 5000);
    await eventually(async () => gone(nginx), "the gateway's nginx to exit", 5000);
    assert.equal((await run('nft', ['list', 'table', 'inet', guardTable(world.home)])).code, 1, 'the listener guard is removed');
    assert.ok(!existsSync(`/run/sbx/${createHash('sha256').update(world.home).digest('hex').slice(0, 12)}`), "and nginx's workers' directory");
    assert.match(readFileSync(join(world.home, 'gateway.log'), 'utf8'), /gateway stopped\n$/);
  });
});

describe('leaves nothing behind', () => {
  it('rm removes the sandboxes', async () => {
    for (const b of boxes) await world.sbx(['rm', '-f', b]);
    assert.deepEqual(await world.leftovers(), { containers: [], networks: [], tables: [] });
  });
});
