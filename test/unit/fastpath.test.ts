// The fast path's sync asks Docker once (one container list), however many sandboxes there are;
// the gateway's view of the containers (container-view.ts) keeps the answers while Docker's events flow.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADD_QUIET_MS, FastPath } from '../../src/gateway/fastpath.ts';
import { ContainerView } from '../../src/gateway/container-view.ts';
import { findNginx, NginxFrontend } from '../../src/gateway/nginx.ts';
import { renderNginxConfig } from '../../src/gateway/nginx-config.ts';
import { hardOpenFiles } from '../../src/gateway/open-files.ts';
import { objectNames } from '../../src/core/sandbox.ts';

test('fast-path sync: one container list call for all sandboxes, no inspect per sandbox', { skip: !findNginx() && 'no nginx' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-fastpath-'));
  const records = Array.from({ length: 5 }, (_, i) => ({ id: `id${i}`, name: `box${i}`, ports: [{ port: 3000, public: true }] }));
  const calls = { inspect: 0, list: 0 };
  const runtime = {
    inspectContainer: async () => {
      calls.inspect++;
      return { state: 'running', ip: '10.1.2.3' };
    },
    listSandboxContainers: async () => {
      calls.list++;
      return new Map(records.map((r, i) => [objectNames(r.id).container, { state: i === 4 ? 'paused' : 'running', ip: `10.1.2.${i + 2}` }]));
    },
  };
  const routes = { all: () => records };
  const view = new ContainerView(runtime as never, dir);
  const fp = await FastPath.start({ nginxBin: findNginx()!, runDir: join(dir, 'run'), home: dir, host: '127.0.0.1', port: 0, domain: 'sbx.localhost', nodeSocket: join(dir, 'node.sock'), upstreamTimeoutMs: 1000, routes: routes as never, containers: view });
  try {
    assert.deepEqual(calls, { inspect: 0, list: 1 });
    const conf = readFileSync(join(dir, 'run', 'nginx.conf'), 'utf8');
    for (let i = 0; i < 4; i++) assert.match(conf, new RegExp(`server 10\\.1\\.2\\.${i + 2}:3000`));
    assert.doesNotMatch(conf, /10\.1\.2\.6:3000/, 'a paused sandbox is not routed directly');
    await fp.sync();
    assert.deepEqual(calls, { inspect: 0, list: 2 }, 'no Docker events heard yet: every sync lists');
  } finally {
    await fp.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('fast-path sync: with Docker events heard, only containers reported changed (or new) are asked about', { skip: !findNginx() && 'no nginx' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-fastpath-'));
  const records = Array.from({ length: 3 }, (_, i) => ({ id: `id${i}`, name: `box${i}`, ports: [{ port: 3000, public: true }] }));
  const calls = { inspect: 0, list: 0 };
  const states = new Map(records.map((r, i) => [objectNames(r.id).container, { state: 'running', ip: `10.1.2.${i + 2}` }]));
  const runtime = {
    inspectContainer: async (name: string) => {
      calls.inspect++;
      return states.get(name);
    },
    listSandboxContainers: async () => {
      calls.list++;
      return new Map(states);
    },
  };
  const routes = { all: () => records };
  const view = new ContainerView(runtime as never, dir);
  const conf = () => readFileSync(join(dir, 'run', 'nginx.conf'), 'utf8');
  const fp = await FastPath.start({ nginxBin: findNginx()!, runDir: join(dir, 'run'), home: dir, host: '127.0.0.1', port: 0, domain: 'sbx.localhost', nodeSocket: join(dir, 'node.sock'), upstreamTimeoutMs: 1000, routes: routes as never, containers: view });
  try {
    view.trustEvents(true);
    await fp.sync();
    await fp.sync();
    assert.deepEqual(calls, { inspect: 0, list: 2 }, 'one list once events are heard, then none');
    states.set(objectNames('id1').container, { state: 'paused', ip: '10.1.2.3' });
    await fp.sync();
    assert.match(conf(), /server 10\.1\.2\.3:3000/, 'no event yet: what Docker said before');
    view.changed('id1');
    await fp.sync();
    assert.deepEqual(calls, { inspect: 1, list: 2 });
    assert.doesNotMatch(conf(), /server 10\.1\.2\.3:3000/, 'paused: no longer routed directly');
    records.push({ id: 'id3', name: 'box3', ports: [{ port: 3000, public: true }] });
    states.set(objectNames('id3').container, { state: 'running', ip: '10.1.2.9' });
    await fp.sync();
    assert.deepEqual(calls, { inspect: 2, list: 2 }, 'a new sandbox: its container alone');
    assert.doesNotMatch(conf(), /server 10\.1\.2\.9:3000/, 'an added route waits for the quiet time (the Node gateway serves it)');
    await new Promise((r) => setTimeout(r, ADD_QUIET_MS + 100));
    assert.match(conf(), /server 10\.1\.2\.9:3000/);
    assert.deepEqual(calls, { inspect: 2, list: 2 });
    view.forget();
    await fp.sync();
    assert.deepEqual(calls, { inspect: 2, list: 3 }, 'any container may have changed: one list');
    view.trustEvents(false);
    await fp.sync();
    await fp.sync();
    assert.deepEqual(calls, { inspect: 2, list: 5 }, 'the event stream broke: every sync lists again');
  } finally {
    await fp.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('container view: a failed list is thrown and nothing is kept; an answer asked for before a change is not kept', async () => {
  let fail = true;
  const calls = { inspect: 0, list: 0 };
  const name = objectNames('id0').container;
  let release: () => void = () => {};
  const runtime = {
    inspectContainer: async () => {
      calls.inspect++;
      return { state: 'exited' as const };
    },
    listSandboxContainers: async () => {
      calls.list++;
      if (fail) throw new Error('engine down');
      await new Promise<void>((r) => (release = r));
      return new Map([[name, { state: 'running' as const, ip: '10.1.2.3' }]]);
    },
  };
  const view = new ContainerView(runtime as never, '/nowhere');
  view.trustEvents(true);
  await assert.rejects(view.states([name]), /engine down/);
  fail = false;
  const pending = view.states([name]);
  await new Promise((r) => setImmediate(r));
  view.changed('id0'); // Docker reports a change while the list is on its way
  release();
  assert.equal((await pending).get(name)?.state, 'running', 'the list is answered as it is');
  const again = view.states([name]);
  await new Promise((r) => setImmediate(r));
  release();
  await again;
  assert.deepEqual(calls, { inspect: 0, list: 3 }, 'the list that crossed a change was not kept: listed again');
  assert.equal((await view.states([name])).get(name)?.state, 'running', 'kept now');
  assert.deepEqual(calls, { inspect: 0, list: 3 });
});

test('fast-path sync: added routes wait for the quiet time and go in one reload; a removal is in force at once and takes them along', { skip: !findNginx() && 'no nginx' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-fastpath-'));
  const records: { id: string; name: string; ports: { port: number; public: boolean }[] }[] = [{ id: 'id0', name: 'box0', ports: [{ port: 3000, public: true }] }];
  const runtime = {
    inspectContainer: async () => undefined,
    listSandboxContainers: async () => new Map(records.map((r, i) => [objectNames(r.id).container, { state: 'running', ip: `10.1.2.${i + 2}` }])),
  };
  const view = new ContainerView(runtime as never, dir);
  const conf = () => readFileSync(join(dir, 'run', 'nginx.conf'), 'utf8');
  const version = () => Number(/version (\d+)/.exec(conf())![1]);
  const fp = await FastPath.start({ nginxBin: findNginx()!, runDir: join(dir, 'run'), home: dir, host: '127.0.0.1', port: 0, domain: 'sbx.localhost', nodeSocket: join(dir, 'node.sock'), upstreamTimeoutMs: 1000, routes: { all: () => records } as never, containers: view });
  try {
    const v0 = version();
    // Three sandboxes come, one after another (a burst of creates): one reload for all of them.
    for (const i of [1, 2, 3]) {
      records.push({ id: `id${i}`, name: `box${i}`, ports: [{ port: 3000, public: true }] });
      await fp.sync();
    }
    assert.equal(version(), v0, 'nothing reloaded yet');
    assert.equal(fp.routesDirectly('id1', 3000), false);
    await new Promise((r) => setTimeout(r, ADD_QUIET_MS + 150));
    assert.equal(version(), v0 + 1, 'one reload for the three');
    for (const i of [1, 2, 3]) assert.match(conf(), new RegExp(`server 10\\.1\\.2\\.${i + 2}:3000`));
    assert.equal(fp.routesDirectly('id3', 3000), true);
    // Added then taken back within the quiet time: nothing to reload.
    records.push({ id: 'id4', name: 'box4', ports: [{ port: 3000, public: true }] });
    await fp.sync();
    records.pop();
    await fp.sync();
    await new Promise((r) => setTimeout(r, ADD_QUIET_MS + 150));
    assert.equal(version(), v0 + 1, 'an add taken back costs no reload');
    // An add waiting when a removal comes: the removal is in force when sync resolves, the add with it.
    records.push({ id: 'id5', name: 'box5', ports: [{ port: 3000, public: true }] });
    await fp.sync();
    records.splice(0, 1); // id0 goes
    await fp.sync();
    assert.equal(version(), v0 + 2);
    assert.doesNotMatch(conf(), /sbx_id0_3000/, 'the removed route is gone');
    assert.match(conf(), /sbx_id5_3000/, 'the waiting add went with it');
  } finally {
    await fp.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('nginx reloads: a configuration written while nginx still reads the last one is never read half-written', { skip: !findNginx() && 'no nginx' }, async () => {
  // A thousand sandboxes make a configuration of about 1.5 MB, which nginx takes tens of ms to
  // read after each SIGHUP. Routes that are only added return at once (no wait for the reload), so
  // the next change's file is written while nginx may still read the last one: written in place,
  // nginx read a mix of both ("duplicate upstream", "pread() returned only 0 bytes" in its log,
  // seen with 1,000 sandboxes) and a reload could even take the mix.
  const dir = mkdtempSync(join(tmpdir(), 'sbx-fastpath-'));
  const runDir = join(dir, 'run');
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
  const nginx = new NginxFrontend(findNginx()!, runDir, '127.0.0.1', port);
  const config = (version: number, count: number) =>
    renderNginxConfig({
      listenHost: '127.0.0.1', listenPort: port, nodeSocket: join(dir, 'node.sock'), runDir, version, instance: nginx.instance, upstreamTimeoutMs: 1000, user: process.getuid?.() === 0 ? 'root' : undefined, ...(hardOpenFiles() ? { openFiles: hardOpenFiles() } : {}),
      routes: Array.from({ length: count }, (_, i) => ({ name: `sbx_box${i}_${version}_3000`, address: `10.1.${i >> 8}.${i & 255}:3000`, hosts: [`3000-box${i}-${version}.sbx.localhost`] })),
    });
  try {
    await nginx.start(config(1, 1000), 1);
    // Changes that only add routes, one right after another (a burst of creates), then a removal
    // that is waited for.
    for (let v = 2; v <= 12; v++) await nginx.apply(config(v, 1000 + v), v, false);
    await nginx.apply(config(13, 999), 13, true);
    const log = readFileSync(join(runDir, 'nginx-error.log'), 'utf8');
    assert.doesNotMatch(log, /\[emerg\]/, 'nginx never read a half-written configuration');
    assert.deepEqual(readdirSync(runDir).filter((f) => f.includes('.tmp')), [], 'no temporary file is left');
  } finally {
    await nginx.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
