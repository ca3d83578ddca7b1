// sbx's own address plan (issue 12): every sandbox network gets a /28 from SBX_SUBNET_POOL, so the
// count is not capped by Docker's default pools (about 31 networks), and the pool never collides
// with another Docker network or a route of the host. Proven with the engine's own view of the
// networks; every other integration file runs its sandboxes (and their packets) on such subnets.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ipaddr from 'ipaddr.js';
import { docker, oneErrorLine, run, World } from '../helpers.ts';

const worlds: World[] = [];
const veth = `sbxt${process.pid % 100000}`;
const netns = `sbxt-${process.pid}`;
const foreignNet = `sbxtest-foreign-${process.pid}`;
after(async () => {
  for (const w of worlds) await w.cleanup();
  await run('ip', ['link', 'del', veth]);
  await run('ip', ['netns', 'del', netns]);
  await docker('network', 'rm', foreignNet);
});

function world(env: Record<string, string> = {}): World {
  const w = new World(env);
  worlds.push(w);
  return w;
}

/** The IPv4 subnet of a sandbox's network, as the engine has it. */
async function subnetOf(w: World, name: string): Promise<string> {
  const box = await w.json(['inspect', name]);
  const net = JSON.parse((await docker('network', 'inspect', box.dockerNetwork)).stdout)[0];
  return (net.IPAM.Config as Array<{ Subnet: string }>).find((c) => !c.Subnet.includes(':'))!.Subnet;
}

const inside = (cidr: string, pool: string) => ipaddr.parse(cidr.split('/')[0]!).match(ipaddr.parseCIDR(pool));

describe('40 sandboxes at once, past Docker\'s default pools', () => {
  const w = world();
  const names = Array.from({ length: 40 }, (_, i) => `many-${i}`);

  it('all are created (8 at a time), each on its own /28 of 10.211.0.0/16, and an rm of them all leaves no network', async () => {
    for (let i = 0; i < names.length; i += 8) {
      const batch = await Promise.all(names.slice(i, i + 8).map((n) => w.sbx(['create', '--name', n])));
      for (const r of batch) assert.equal(r.code, 0, r.stderr);
    }
    const list = await w.json<any[]>(['ls']);
    assert.equal(list.filter((b) => b.status === 'running').length, 40);
    const subnets = await Promise.all(names.map((n) => subnetOf(w, n)));
    assert.equal(new Set(subnets).size, 40, 'distinct subnets');
    for (const s of subnets) {
      assert.match(s, /\/28$/);
      assert.ok(inside(s, '10.211.0.0/16'), `${s} in the pool`);
    }
    // Control: the sandboxes work on them (the engine's resolver address is the /28's first host).
    const r = await w.sbx(['exec', 'many-39', '--', 'sh', '-c', 'ip -4 -o addr show eth0']);
    assert.match(r.stdout, new RegExp(` ${subnets[39]!.replace(/\.\d+\/28$/, '').replace(/\./g, '\\.')}\\.\\d+/28 `));
    for (let i = 0; i < names.length; i += 8) await Promise.all(names.slice(i, i + 8).map((n) => w.sbx(['rm', '-f', n])));
    assert.deepEqual(await w.leftovers(), { containers: [], networks: [], tables: [] });
  });
});

describe('the pool is clear of the host and of Docker', () => {
  it("a subnet the host routes (an interface's) and another Docker network's are skipped; the pool's last free one is used", async () => {
    // A link into a namespace of the test's own: a route on this host (no traffic goes anywhere).
    for (const args of [['netns', 'add', netns], ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns], ['addr', 'add', '10.212.77.1/28', 'dev', veth], ['link', 'set', veth, 'up']]) {
      const r = await run('ip', args);
      assert.equal(r.code, 0, `ip ${args.join(' ')}: ${r.stderr}`);
    }
    assert.match((await run('ip', ['-4', 'route', 'show', 'dev', veth])).stdout, /^10\.212\.77\.0\/28 /m);
    const made = await docker('network', 'create', '--subnet', '10.212.77.16/28', foreignNet);
    assert.equal(made.code, 0, made.stderr);
    const w = world({ SBX_SUBNET_POOL: '10.212.77.0/26' }); // 4 subnets: .0 (route), .16 (docker), .32, .48
    await w.json(['create', '--name', 'a']);
    await w.json(['create', '--name', 'b']);
    const got = [await subnetOf(w, 'a'), await subnetOf(w, 'b')].sort();
    assert.deepEqual(got, ['10.212.77.32/28', '10.212.77.48/28']);
  });

  it('an exhausted pool: exit 1, one line naming the pool and SBX_SUBNET_POOL, and nothing of the sandbox is left', async () => {
    const w = worlds[worlds.length - 1]!;
    const before = await w.leftovers();
    // The name has a '-', which no id holds: a one-letter name could be a live sandbox's id prefix.
    const r = await w.sbx(['create', '--name', 'the-c']);
    assert.equal(r.code, 1);
    assert.match(oneErrorLine(r), /^error: no free \/28 subnet left in sbx's address pool 10\.212\.77\.0\/26 \(4 in all; Docker networks and the host's routes take the rest\): remove sandboxes, or set SBX_SUBNET_POOL to a larger or another range$/);
    assert.equal((await w.sbx(['inspect', 'the-c'])).code, 3, 'no store entry');
    assert.deepEqual(await w.leftovers(), before, 'no container or network');
    // Control: an rm frees its subnet for the next create, which waits while it rests (only that
    // one is free; address-reuse.test.ts shows why it rests).
    const freed = await subnetOf(w, 'a');
    await w.json(['rm', '-f', 'a']);
    const resting = JSON.parse(readFileSync(join(w.home, 'state.json'), 'utf8')).resting;
    assert.deepEqual(Object.keys(resting), [freed]);
    await w.json(['create', '--name', 'the-c']);
    assert.equal(await subnetOf(w, 'the-c'), freed);
  });

  for (const bad of ['10.0.0.0/29', 'fd00::/64', '10.0.0.1/24', 'nonsense']) {
    it(`SBX_SUBNET_POOL=${bad}: exit 2, one line naming it and the accepted form, nothing made`, async () => {
      const w = world({ SBX_SUBNET_POOL: bad });
      const r = await w.sbx(['create', '--name', 'x']);
      assert.equal(r.code, 2);
      assert.match(oneErrorLine(r), new RegExp(`^error: SBX_SUBNET_POOL=${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: .*; expected an IPv4 CIDR from /8 to /28, such as 10\\.211\\.0\\.0/16$`));
      assert.deepEqual(await w.leftovers(), { containers: [], networks: [], tables: [] });
    });
  }
});
