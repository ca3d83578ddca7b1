// A real browser (headless Chromium from Debian) loading sandbox URLs: *.localhost needs no DNS
// set-up there, and private ports work through ?sbx_token= and the cookie it sets.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { curl, eventually, run, World } from '../helpers.ts';

const world = new World();
const profile = mkdtempSync(join(tmpdir(), 'sbx-chromium-'));
after(async () => {
  rmSync(profile, { recursive: true, force: true });
  await world.cleanup();
});

async function dumpDom(url: string): Promise<string> {
  const r = await run('chromium', [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--user-data-dir=${profile}`, '--dump-dom', url,
  ], { timeoutMs: 60_000 });
  return r.stdout;
}

describe('headless Chromium', () => {
  let publicUrl: string;
  let privateUrl: string;
  let token: string;
  before(async () => {
    const pub = await world.json(['create', '--name', 'page', '-p', '3000', '--', 'python3', '-m', 'http.server', '3000']);
    const priv = await world.json(['create', '--name', 'secret', '--private', '-p', '3000', '--', 'python3', '-m', 'http.server', '3000']);
    publicUrl = pub.ports[0].url;
    privateUrl = priv.ports[0].url;
    token = priv.token;
    await eventually(async () => (await curl([publicUrl])).status === 200, 'the public server');
    await eventually(async () => (await curl(['-H', `x-sbx-traffic-token: ${token}`, privateUrl])).status === 200, 'the private server');
  });

  it('loads a public sandbox URL', async () => {
    assert.match(await dumpDom(publicUrl), /Directory listing for \//);
  });

  it('gets the HTML 403 page for a private URL without a token', async () => {
    const dom = await dumpDom(privateUrl);
    assert.match(dom, /403 Forbidden/);
    assert.match(dom, /is private/);
  });

  it('loads a private URL with ?sbx_token= (redirect, cookie) and then without it', async () => {
    assert.match(await dumpDom(`${privateUrl}?sbx_token=${token}`), /Directory listing for \//);
    assert.match(await dumpDom(privateUrl), /Directory listing for \//, 'the cookie carries the token');
  });
});
