// A Docker engine whose bridges are not in sbx's network namespace (test/remote-engine.ts: a
// second dockerd in a namespace of its own, as a remote host or Docker Desktop's VM is). sbx puts
// egress rules into its own kernel, keyed on bridge names: for such an engine they would not
// apply, so sbx must refuse to run sandboxes there rather than show a policy it does not enforce.
// Real packets: the engine's own plain container reaches the fake internet (the test bed routes),
// a main-engine sandbox under --block-network does not.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { docker, orphanRules, run, World } from '../helpers.ts';
import { startFakeInternet, type FakeInternet } from '../fake-internet.ts';
import { loadImages, remoteEngineLeftovers, startRemoteEngine, type RemoteEngine } from '../remote-engine.ts';

let fi: FakeInternet;
const engines: RemoteEngine[] = [];
before(async () => {
  fi = await startFakeInternet();
});
after(async () => {
  for (const e of engines) await e.close();
  await fi?.stop();
});

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
/** The refusal, for `what` ("sandbox x", "the gateway of /tmp/..."). */
const refusal = (engine: RemoteEngine, what: string) =>
  new RegExp(
    `the Docker engine at ${esc(engine.dockerHost)} runs in another network namespace or on another machine: sbx's egress rules would not reach its sandboxes, so ${esc(what)} was not started \\(use the sbx agent for remote engines\\)`,
  );

const onEngine = (engine: RemoteEngine, ...args: string[]) => run('docker', ['-H', engine.dockerHost, ...args]);

/** Tables of sbx (`sbx_<id>`) made since `before` that belong to no sandbox network of the main engine. */
async function newOrphanTables(before: Set<string>): Promise<string[]> {
  return (await orphanRules()).filter((t) => !before.has(t));
}
const tablesNow = async () => new Set([...(await run('nft', ['list', 'tables', 'inet'])).stdout.matchAll(/table inet (sbx_[a-z0-9]+)/g)].map((m) => m[1]!));

/** Nothing of `world` on `engine`, no new rule tables, an empty list. */
async function assertNothingLeft(world: World, engine: RemoteEngine, tables: Set<string>): Promise<void> {
  const filter = `label=sbx.home=${world.home}`;
  assert.equal((await onEngine(engine, 'ps', '-aq', '--filter', filter)).stdout.trim(), '', 'a container was left on the remote engine');
  assert.equal((await onEngine(engine, 'network', 'ls', '-q', '--filter', filter)).stdout.trim(), '', 'a network was left on the remote engine');
  assert.deepEqual(await newOrphanTables(tables), [], 'egress rules were left in the host for the remote engine');
  const ls = await world.sbx(['ls', '--json']);
  assert.equal(ls.code, 0, ls.stderr);
  assert.deepEqual(JSON.parse(ls.stdout), []);
}

describe('a remote engine (its own docker0 subnet, in another network namespace)', () => {
  let engine: RemoteEngine;
  let world: World;
  before(async () => {
    const began = Date.now();
    engine = await startRemoteEngine();
    engines.push(engine);
    console.log(`# startRemoteEngine: ${Date.now() - began} ms`);
    const loading = Date.now();
    await loadImages(engine);
    console.log(`# loadImages sbx/base:bookworm: ${Date.now() - loading} ms`);
    world = new World({ DOCKER_HOST: engine.dockerHost, SBX_AGENT: '0', SBX_DNS_UPSTREAM: fi.dnsUpstream });
  });
  after(async () => world?.cleanup());

  it("the engine's own plain container reaches a fake internet host (the test bed routes; refusals below are sbx's doing)", async () => {
    const r = await onEngine(engine, 'run', '--rm', 'sbx/base:bookworm', 'curl', '-sS', '-m', '10', 'http://allowed.test/');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /allowed\.test/);
  });

  it('create --block-network exits 1: the gateway is not started for it, nothing is made', async () => {
    const tables = await tablesNow();
    const r = await world.sbx(['create', '--block-network', '--name', 'x']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, refusal(engine, `the gateway of ${world.home}`));
    assert.doesNotMatch(r.stdout, /block-all/);
    await assertNothingLeft(world, engine, tables);
    assert.match((await world.sbx(['gateway', 'status'])).stdout, /not running|stopped/);
  });

  it('a plain create (allow-all) refuses the same way', async () => {
    const tables = await tablesNow();
    const r = await world.sbx(['create', '--name', 'y']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, refusal(engine, `the gateway of ${world.home}`));
    await assertNothingLeft(world, engine, tables);
  });
});

describe('a remote engine that looks like this host (docker0 on the same subnet, as two default installs have)', () => {
  let engine: RemoteEngine;
  let world: World;
  before(async () => {
    const [config] = JSON.parse((await docker('network', 'inspect', 'bridge', '--format', '{{json .IPAM.Config}}')).stdout) as Array<{ Subnet: string; Gateway: string }>;
    // Docker does not always name the default bridge's gateway: then it is the subnet's first address.
    const gateway = config!.Gateway || config!.Subnet.replace(/\.0\/\d+$/, '.1');
    engine = await startRemoteEngine({ bip: `${gateway}/${config!.Subnet.split('/')[1]}` });
    engines.push(engine);
    await loadImages(engine);
    world = new World({ DOCKER_HOST: engine.dockerHost, SBX_AGENT: '0', SBX_DNS_UPSTREAM: fi.dnsUpstream });
  });
  after(async () => world?.cleanup());

  it('create --block-network exits 1 naming the sandbox, and rolls back fully', async () => {
    const tables = await tablesNow();
    const r = await world.sbx(['create', '--block-network', '--name', 'x']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, new RegExp(`^error: ${refusal(engine, 'sandbox x').source}\n$`));
    assert.doesNotMatch(r.stdout, /block-all/);
    await assertNothingLeft(world, engine, tables);
  });

  it('a plain create (allow-all) refuses the same way (through the running gateway)', async () => {
    const tables = await tablesNow();
    const r = await world.sbx(['create', '--name', 'y']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, new RegExp(`^error: ${refusal(engine, 'sandbox y').source}\n$`));
    await assertNothingLeft(world, engine, tables);
  });
});

describe('control: the same creates against the main engine', () => {
  let world: World;
  before(() => {
    world = new World({ SBX_AGENT: '0', SBX_DNS_UPSTREAM: fi.dnsUpstream });
  });
  after(async () => world?.cleanup());

  it('create --block-network succeeds, and a fetch to a fake internet host is refused (an allow-all one gets through)', async () => {
    const box = await world.json(['create', '--block-network', '--name', 'x']);
    assert.equal(box.network.mode, 'block-all');
    const open = await world.json(['create', '--name', 'y']);
    assert.equal(open.network.mode, 'allow-all');
    const fetch = (name: string, url: string) => world.sbx(['exec', name, '--', 'curl', '-sS', '-m', '5', url]);
    const blocked = await fetch('x', 'http://198.18.0.1/');
    assert.notEqual(blocked.code, 0, `block-all let ${blocked.stdout} through`);
    const byName = await fetch('x', 'http://allowed.test/');
    assert.notEqual(byName.code, 0, `block-all let ${byName.stdout} through`);
    const allowed = await fetch('y', 'http://allowed.test/');
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.match(allowed.stdout, /allowed\.test/);
    await world.sbx(['rm', '--force', 'x', 'y']);
  });
});

describe('the test bed', () => {
  it('leaves no namespace, engine, firewall rule or directory behind', async () => {
    for (const e of engines) await e.close();
    await fi.stop();
    assert.deepEqual(remoteEngineLeftovers(), { netns: [], processes: [], firewall: [], links: [] }, 'a namespace, process (dockerd, containerd), firewall rule or veth of the test bed is left');
    for (const e of engines) assert.equal(existsSync(e.socket), false);
  });
});
