// Errors in sbx's words: what reaches a user names the sbx concept and what to do, never a
// dependency's or Node's own wording (proper-lockfile's "Lock file is already being held", Node's
// "EEXIST: file already exists, mkdir ...", an unhandled stream error).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { run, SBX, World } from '../helpers.ts';
import { Store } from '../../src/store/store.ts';
import { startGateway } from '../../src/api/gateway-start.ts';
import { RuntimeError } from '../../src/core/errors.ts';

const world = new World({ SBX_GATEWAY_ENGINE: 'node' });
const scratch = mkdtempSync(join(tmpdir(), 'sbx-msg-'));
after(async () => {
  await world.cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

const oneLine = (stderr: string) => assert.equal(stderr.trimEnd().split('\n').length, 1, stderr);

describe('locks', () => {
  it('8 parallel creates while the gateway cannot start: each says why, none says "Lock file is already being held"', async () => {
    // Something else listens on the gateway's port.
    const squatter: Server = createServer();
    await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', () => r()));
    const port = (squatter.address() as { port: number }).port;
    try {
      const started = Date.now();
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => world.sbx(['create', '--name', `locked-${i}`], { env: { SBX_GATEWAY_PORT: String(port) } })));
      const seconds = (Date.now() - started) / 1000;
      for (const r of results) {
        assert.equal(r.code, 1, r.stderr);
        oneLine(r.stderr);
        assert.doesNotMatch(r.stderr, /Lock file/);
        assert.match(r.stderr, new RegExp(`^error: the gateway did not start: .*port ${port} on 127\\.0\\.0\\.1 is in use: .*set SBX_GATEWAY_PORT to a free port`));
      }
      // One start fails, the waiters hear its reason: no process tries in turn for long.
      assert.ok(seconds < 30, `took ${seconds}s`);
    } finally {
      squatter.close();
    }
    assert.deepEqual(await world.leftovers(), { containers: [], networks: [], tables: [] });
  });

  it('a store lock another process keeps is waited for a bounded time, then named with what to do', async () => {
    const home = mkdtempSync(join(scratch, 'store-'));
    const release = await lockfile.lock(home, { lockfilePath: join(home, 'state.lock'), realpath: false, stale: 10_000 });
    try {
      const started = Date.now();
      await assert.rejects(new Store(home, { lockWaitMs: 1500 }).update(() => {}), (e: Error) =>
        e instanceof RuntimeError &&
        /^the sbx store of (SBX_HOME \(|the sbx home ).*\)? ?stayed locked by another sbx process for \ds \(lock .*state\.lock\): retry; a lock whose process died is taken over after 10s$/.test(e.message));
      assert.ok(Date.now() - started >= 1500, 'waited');
      // Released within the wait: the update goes through.
      setTimeout(() => void release(), 300);
      assert.equal(await new Store(home, { lockWaitMs: 5000 }).update(() => 'written'), 'written');
    } finally {
      await release().catch(() => {});
    }
  });

  it('a gateway start another process holds is waited for; its failure is heard at once; a lock held too long is named', async () => {
    const home = mkdtempSync(join(scratch, 'gw-'));
    const release = await lockfile.lock(home, { lockfilePath: join(home, 'gateway.lock'), realpath: false, stale: 15_000 });
    const never = () => Promise.reject(new Error('must not start: another process holds the start'));
    try {
      await assert.rejects(startGateway(home, never, 800), (e: Error) =>
        e instanceof RuntimeError && /^the (gateway of SBX_HOME \(|gateway of the sbx home ).*is being started by another sbx process, which has held .*gateway\.lock for over 1s: see .*gateway\.log, then retry$/.test(e.message));
      // The other process's start fails meanwhile: the waiter fails with its reason, at once.
      setTimeout(() => writeFileSync(join(home, 'gateway.failed'), JSON.stringify({ at: Date.now(), message: 'the gateway did not start: port 1 is in use' })), 200);
      const started = Date.now();
      await assert.rejects(startGateway(home, never, 20_000), /^RuntimeError: the gateway did not start: port 1 is in use$/);
      assert.ok(Date.now() - started < 5000);
    } finally {
      await release();
    }
  });
});

describe('SBX_HOME that cannot be used', () => {
  const file = join(scratch, 'a-file');
  writeFileSync(file, '');

  it('a file: exit 2, naming SBX_HOME', async () => {
    const r = await run(SBX, ['ls'], { env: { SBX_HOME: file } });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, `error: SBX_HOME (${file}) is not a directory: point SBX_HOME at a directory (sbx creates a missing one)\n`);
  });

  it('under a file: exit 2', async () => {
    const r = await run(SBX, ['create', '--name', 'x'], { env: { SBX_HOME: join(file, 'home') } });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^error: SBX_HOME \(.*a-file\/home\) cannot be a directory: part of its path is a file/);
    oneLine(r.stderr);
  });

  it('the default home (XDG_CONFIG_HOME/sbx) a file: exit 2, naming it', async () => {
    const xdg = mkdtempSync(join(scratch, 'xdg-'));
    writeFileSync(join(xdg, 'sbx'), '');
    const r = await run(SBX, ['ls'], { env: { SBX_HOME: undefined, XDG_CONFIG_HOME: xdg } });
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, `error: the sbx home ${join(xdg, 'sbx')} is not a directory: move that file away or set SBX_HOME to a directory (sbx creates a missing one)\n`);
  });

  it('not writable by this user: exit 1, naming SBX_HOME and the fix', { skip: process.getuid?.() !== 0 && 'needs root to run sbx as another user' }, async () => {
    const ro = mkdtempSync(join(scratch, 'ro-'));
    chmodSync(scratch, 0o755);
    chmodSync(ro, 0o755); // root's, and only readable by others
    mkdirSync(join(ro, 'sub'));
    for (const [home, args, doing] of [[join(ro, 'new'), ['ls'], 'create it'], [ro, ['create', '--name', 'x'], 'start the gateway']] as const) {
      // Host mode (forced) keeps its files in SBX_HOME; agent mode keeps none there (below).
      const r = await run('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', SBX, ...args], { env: { SBX_HOME: home, SBX_AGENT: '0' } });
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`^error: SBX_HOME \\(${home}\\) is not writable by this user: cannot ${doing} \\(EACCES.*\\); fix its permissions or point SBX_HOME at a directory you own$`, 'm'));
      oneLine(r.stderr);
    }
    // A user who may not use the engine (agent mode, the default for non-root): told so.
    const r = await run('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', SBX, 'ls'], { env: { SBX_HOME: join(ro, 'new') } });
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: the Docker engine at unix:\/\/\/var\/run\/docker\.sock does not let this user in \(EACCES\): run sbx as root or as a member of the docker group/m);
    oneLine(r.stderr);
  });
});

describe('files named on the command line', () => {
  it('fetch -d @FILE that does not exist: exit 2, not an unhandled stream error', async () => {
    const r = await world.sbx(['fetch', 'nobox', '80', '-d', '@/nonexistent/body.json']);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, 'error: cannot read the request body from /nonexistent/body.json (-d @/nonexistent/body.json): no such file\n');
  });
});

describe('a reader that stops early', () => {
  it('sbx ... | true: no "write EPIPE" trace, exit 0', async () => {
    const r = await run('bash', ['-c', `set -o pipefail; ${SBX} completion bash | true`], { env: { SBX_HOME: world.home } });
    assert.equal(r.stderr, '');
    assert.equal(r.code, 0);
  });
});
