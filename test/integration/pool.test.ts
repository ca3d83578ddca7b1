// The warm pool, with a real engine and real packets: pooled sandboxes are blocked with no DNS
// and invisible until claimed; a claim applies policy, env and limits (seen from inside); claims
// race safely; the pool refills; a claim killed half-way (daemon or CLI) leaves it consistent;
// removal leaves nothing. Runs under the fake internet's lock (flock /tmp/sbx-fi.lock).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { docker, eventually, oneErrorLine, ROOT, run, sleep, World } from '../helpers.ts';
import { startFakeInternet, type FakeInternet } from '../fake-internet.ts';

let fi: FakeInternet;
let world: World;
/** Every sandbox id this file saw (pooled or claimed): none may be left anywhere at the end. */
const seen = new Set<string>();

before(async () => {
  fi = await startFakeInternet();
  world = new World({ SBX_DNS_UPSTREAM: fi.dnsUpstream });
});
after(async () => {
  await world?.sbx(['pool', 'set', '0']);
  await world?.cleanup();
  await fi?.stop();
});

interface Status {
  size: number;
  ready: number;
  creating: number;
  removing: number;
  ids: string[];
}

async function status(): Promise<Status> {
  const s = await world.json<Status>(['pool', 'status']);
  for (const id of s.ids) seen.add(id);
  return s;
}

async function poolReady(n: number, timeoutMs = 60_000): Promise<Status> {
  let last: Status | undefined;
  await eventually(async () => {
    last = await status();
    return last.ready === n && last.creating === 0 && last.removing === 0;
  }, `${n} pooled sandboxes ready (last: ${JSON.stringify(last)})`, timeoutMs);
  return last!;
}

const store = () => JSON.parse(readFileSync(join(world.home, 'state.json'), 'utf8')) as { sandboxes: Record<string, any>; pool?: { entries: Record<string, any> } };

/** The probe script into a container by docker exec (pooled sandboxes have no sbx name). */
async function probeIn(container: string, ...args: string[]): Promise<string> {
  const put = await run('docker', ['exec', '-i', container, 'sh', '-c', 'cat > /probe.py'], { input: readFileSync(join(ROOT, 'test', 'fixtures', 'probe.py'), 'utf8') });
  assert.equal(put.code, 0, put.stderr);
  const r = await docker('exec', container, 'python3', '/probe.py', ...args);
  return r.stdout.trim();
}

async function sh(box: string, script: string): Promise<string> {
  const r = await world.sbx(['exec', box, '--', 'sh', '-c', script]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/** One cgroup value, v2 file or v1 file (this machine runs cgroup v1). */
const cgroup = (box: string, v2: string, v1: string) => sh(box, `cat /sys/fs/cgroup/${v2} 2>/dev/null || cat /sys/fs/cgroup/${v1}`);

describe('warm pool', () => {
  it('refuses a bad size with exit 2 and one line naming what is accepted', async () => {
    for (const bad of ['-1', 'x']) {
      const r = await world.sbx(['pool', 'set', bad]);
      assert.equal(r.code, 2);
      assert.match(oneErrorLine(r), /invalid pool size .*whole number from 0 \(off\) to 64/);
    }
    assert.equal((await status()).size, 0, 'off by default');
  });

  it('keeps pooled sandboxes blocked with no DNS, invisible to ls and inspect', async () => {
    await world.json(['pool', 'set', '2']);
    const s = await poolReady(2);
    assert.deepEqual(await world.json(['ls']), []);
    const id = s.ids[0]!;
    const r = await world.sbx(['inspect', id]);
    assert.equal(r.code, 3, 'a pooled sandbox is nobody\'s: not found');
    const c = `sbx-${id}`;
    assert.match(await probeIn(c, 'connect', fi.hosts['allowed.test'][0], '80'), /^fail /);
    const resolver = (await docker('exec', c, 'sh', '-c', "awk '/^nameserver/ {print $2; exit}' /etc/resolv.conf")).stdout.trim();
    assert.match(resolver, /^10\./);
    assert.match(await probeIn(c, 'dns', resolver, 'allowed.test'), /^fail /, 'no DNS answer from its resolver');
    assert.match(await probeIn(c, 'resolve', 'allowed.test'), /^fail /);
    // And no DNS query left the machine for it.
    assert.ok(!(await fi.queries()).includes('allowed.test'));
  });

  it('a claim applies policy, env and limits, seen from inside', async () => {
    const before = await poolReady(2);
    const box = await world.json(['create', '--name', 'claimed', '--block-network', '--allow-out', 'allowed.test', '-e', 'POOLVAR=hello', '--memory', '256m', '--cpus', '0.5', '--pids-limit', '200']);
    assert.equal(box.pooled, true);
    assert.ok(before.ids.includes(box.id), 'it is one of the pooled sandboxes');
    assert.equal(box.status, 'running');
    assert.deepEqual(box.env, { POOLVAR: 'hello' });
    await world.put('claimed', 'probe.py', '/probe.py');
    assert.match(await sh('claimed', 'python3 /probe.py resolve allowed.test'), /^ok 198\.18\.0\.1/);
    assert.equal(await sh('claimed', 'curl -s -m 5 http://allowed.test/'), '198.18.0.1 80 allowed.test');
    assert.notEqual((await world.sbx(['exec', 'claimed', '--', 'curl', '-s', '-f', '-m', '5', 'http://denied.test/'])).code, 0);
    // Ports 80 and 443 go to the Host/SNI proxy when names matter: raw TCP is checked on another port.
    assert.match(await sh('claimed', 'python3 /probe.py connect 198.18.0.3 8080'), /^fail /);
    // The claim's rules went in through libnftables in the gateway's process (the path of the
    // host-mode gateway; SBX_NFT, used by egress.test.ts, keeps the nft process).
    assert.match(readFileSync(join(world.home, 'gateway.log'), 'utf8'), /egress rules: libnftables in this process\n/);
    assert.match(await sh('claimed', 'env'), /^POOLVAR=hello$/m);
    assert.equal((await world.sbx(['exec', '-e', 'POOLVAR=mine', 'claimed', '--', 'sh', '-c', 'echo $POOLVAR'])).stdout.trim(), 'mine', 'the exec\'s own env wins');
    assert.equal(await cgroup('claimed', 'memory.max', 'memory/memory.limit_in_bytes'), String(256 * 1024 * 1024));
    assert.match(await cgroup('claimed', 'cpu.max', 'cpu/cpu.cfs_quota_us'), /^50000( 100000)?$/);
    assert.equal(await cgroup('claimed', 'pids.max', 'pids/pids.max'), '200');
    const ls = await world.json<any[]>(['ls']);
    assert.deepEqual(ls.map((b) => b.name), ['claimed']);
    assert.ok(!(await status()).ids.includes(box.id), 'a claimed sandbox left the pool');
    // A shape that cannot be claimed is created as before.
    const fresh = await world.json(['create', '--name', 'fresh', '--', 'sleep', 'infinity']);
    assert.equal(fresh.pooled, undefined);
    await world.json(['rm', '-f', 'claimed', 'fresh']);
  });

  it('two creates racing for the last pooled sandbox get distinct sandboxes', async () => {
    await world.json(['pool', 'set', '1']);
    await poolReady(1);
    const [a, b] = await Promise.all([world.json(['create', '--name', 'race-a']), world.json(['create', '--name', 'race-b'])]);
    assert.notEqual(a.id, b.id);
    assert.ok(a.pooled || b.pooled, 'one claimed it');
    assert.equal(a.status, 'running');
    assert.equal(b.status, 'running');
    const ls = await world.json<any[]>(['ls']);
    assert.deepEqual(ls.map((x) => x.name).sort(), ['race-a', 'race-b']);
    await world.json(['rm', '-f', 'race-a', 'race-b']);
  });

  it('refills after a burst', async () => {
    await world.json(['pool', 'set', '3']);
    await poolReady(3);
    const boxes = await Promise.all(['burst-1', 'burst-2', 'burst-3'].map((n) => world.json(['create', '--name', n])));
    assert.ok(boxes.every((b) => b.pooled), 'all three claimed');
    for (const b of boxes) seen.add(b.id);
    const s = await poolReady(3, 60_000);
    assert.ok(s.ids.every((id) => !boxes.some((b) => b.id === id)), 'the pool holds new sandboxes, not claimed ones');
    await world.json(['rm', '-f', 'burst-1', 'burst-2', 'burst-3']);
  });

  /**
   * Starts `create NAME` and kills (-9) `victim` once the claim is under way (the record is in the
   * store as being created from a pooled id). Resolves with the claimed id, or undefined when the
   * claim finished before it could be caught.
   */
  async function killMidClaim(name: string, victim: 'daemon' | 'cli'): Promise<string | undefined> {
    const child = world.spawn(['create', '--name', name, '--json']);
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    let claimed: string | undefined;
    const deadline = Date.now() + 10_000;
    while (!claimed && Date.now() < deadline && child.exitCode === null) {
      try {
        const r = Object.values(store().sandboxes).find((x: any) => x.name === name && x.creating && x.pooled);
        if (r) claimed = r.id;
      } catch {}
      if (!claimed) await sleep(1);
    }
    if (claimed) process.kill(victim === 'cli' ? child.pid! : (await world.gatewayState()).pid, 'SIGKILL');
    await exited;
    return claimed;
  }

  for (const victim of ['daemon', 'cli'] as const) {
    it(`stays consistent when the ${victim} is killed mid-claim`, async () => {
      let claimed: string | undefined;
      for (let attempt = 0; attempt < 8 && !claimed; attempt++) {
        await world.json(['pool', 'set', '2']);
        await poolReady(2);
        claimed = await killMidClaim(`killed-${victim}-${attempt}`, victim);
        if (!claimed) await world.sbx(['rm', '-f', `killed-${victim}-${attempt}`]);
      }
      assert.ok(claimed, 'a claim was caught half-way');
      seen.add(claimed);
      // The next command starts the daemon (when it was killed), whose reconciler rolls back. (A
      // daemon killed a moment ago may still pass for running until it is reaped: asked again.)
      await eventually(async () => {
        await world.sbx(['gateway', 'start']);
        return !Object.values(store().sandboxes).some((r: any) => r.creating);
      }, 'no half-claimed record left', 30_000);
      const s = await poolReady(2);
      assert.ok(!s.ids.includes(claimed), 'a half-claimed sandbox is never back in the pool');
      // Whatever holds the claimed id is one whole sandbox or nothing at all; the name is free or a sandbox's.
      const ls = await world.json<any[]>(['ls']);
      const holder = ls.find((b) => b.id === claimed);
      const container = (await docker('ps', '-aq', '--filter', `name=^sbx-${claimed}$`)).stdout.trim();
      if (holder) assert.equal(holder.status, 'running');
      else assert.equal(container, '', 'a rolled-back claim leaves no container');
      for (const b of ls) await world.json(['rm', '-f', b.name]);
      const again = await world.json(['create', '--name', `killed-${victim}-0`]);
      await world.json(['rm', '-f', again.name]);
    });
  }

  it('rm of everything and pool set 0 leave nothing', async () => {
    await world.json(['pool', 'set', '2']);
    await poolReady(2);
    const box = await world.json(['create', '--name', 'last']);
    seen.add(box.id);
    await world.json(['rm', '-f', 'last']);
    const s = await world.json<Status>(['pool', 'set', '0']);
    assert.deepEqual({ ready: s.ready, creating: s.creating, removing: s.removing, ids: s.ids }, { ready: 0, creating: 0, removing: 0, ids: [] });
    await eventually(async () => (await status()).ids.length === 0, 'an empty pool');
    assert.deepEqual(Object.keys(store().sandboxes), []);
    assert.deepEqual(Object.keys(store().pool?.entries ?? {}), []);
    const left = await world.leftovers();
    assert.deepEqual({ containers: left.containers, networks: left.networks }, { containers: [], networks: [] });
    const ruleset = (await run('nft', ['list', 'ruleset'])).stdout;
    const tables = (await run('nft', ['list', 'tables'])).stdout;
    for (const id of seen) {
      assert.ok(!tables.includes(id), `no nft table of ${id}`);
      assert.ok(!ruleset.includes(`sbx-${id}`) && !ruleset.includes(id), `no rule of ${id}`);
    }
    const nets = (await docker('network', 'ls', '--format', '{{.Name}}')).stdout;
    for (const id of seen) assert.ok(!nets.includes(id), `no network (nor its subnet) of ${id}`);
  });
});
