// A private port's token is checked by the gateway. A local user who connects to the sandbox's
// address directly would go around it: the sandbox's `output` chain refuses new connections from
// the host into the sandbox unless they come from root (the gateway; root can always look).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { curl, eventually, run, World } from '../helpers.ts';

const user = `sbxguard${randomBytes(3).toString('hex')}`;
let world: World;
let ip = '';
let token = '';

/** curl as the unprivileged local user: the HTTP status, or 0 when the connection failed. */
async function asUser(url: string, ...extra: string[]): Promise<{ status: number; ms: number }> {
  const started = performance.now();
  const r = await run('runuser', ['-u', user, '--', 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '-m', '5', ...extra, url]);
  return { status: Number(r.stdout.trim() || 0), ms: performance.now() - started };
}

describe('host to sandbox: only through the gateway', { skip: process.getuid?.() !== 0 && 'needs root (useradd, runuser)' }, () => {
  before(async () => {
    await run('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', user]);
    world = new World();
    const box = await world.json(['create', '--name', 'vault', '-p', '8000', '--private', '--', 'python3', '-m', 'http.server', '8000']);
    ip = box.ip;
    token = box.token;
    await eventually(async () => (await run('curl', ['-s', '-o', '/dev/null', '-m', '2', `http://${ip}:8000/`])).code === 0, 'the server in the sandbox');
  });
  after(async () => {
    await world?.cleanup();
    await run('userdel', [user]);
  });

  it('a local user connecting to a private port directly is refused, at once', async () => {
    const r = await asUser(`http://${ip}:8000/`);
    assert.equal(r.status, 0, 'no HTTP answer at all');
    assert.ok(r.ms < 2000, `refused in ${r.ms.toFixed(0)} ms, not timed out`);
    assert.equal((await asUser(`http://${ip}:22/`)).status, 0, 'nor any other port of the sandbox');
  });

  it('the same user through the gateway: 403 without the token, 200 with it', async () => {
    const url = world.url(8000, 'vault');
    assert.equal((await asUser(url)).status, 403);
    assert.equal((await asUser(url, '-H', `x-sbx-traffic-token: ${token}`)).status, 200);
  });

  it('root can always look', async () => {
    assert.equal((await curl([`http://${ip}:8000/`])).status, 200);
  });
});
