// Sandboxes' DNS and web traffic is redirected to the gateway's egress listeners. While the
// gateway is down (stopped, crashed, being replaced) whoever listens on those ports would receive
// it: the attack is a local user binding them. They are below 1024, so only root can.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { run, World } from '../helpers.ts';

/** Tries to listen on `port` (tcp or udp) as the user nobody; resolves with the error code, or 'ok'. */
async function bindAsNobody(port: number, proto: 'tcp' | 'udp'): Promise<string> {
  const script = proto === 'tcp'
    ? `require('net').createServer().once('error', (e) => { console.log(e.code); process.exit(0); }).listen(${port}, () => { console.log('ok'); process.exit(0); })`
    : `const s = require('dgram').createSocket('udp4'); s.once('error', (e) => { console.log(e.code); process.exit(0); }); s.bind(${port}, () => { console.log('ok'); process.exit(0); })`;
  const r = await run('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, '-e', script]);
  return r.stdout.trim() || r.stderr.trim();
}

describe('the egress listeners while the gateway is down', { skip: process.getuid?.() !== 0 && 'needs root' }, () => {
  const world = new World();
  let listeners: { dns: number; http: number; tls: number };
  before(async () => {
    assert.equal((await world.sbx(['gateway', 'start'])).code, 0);
    listeners = JSON.parse(readFileSync(join(world.home, 'gateway.json'), 'utf8')).egress;
  });
  after(() => world.cleanup());

  it('they are below 1024 (the gateway runs as root and drops after binding)', () => {
    for (const p of [listeners.dns, listeners.http, listeners.tls]) assert.ok(p > 0 && p < 1024, JSON.stringify(listeners));
  });

  it('attack: after gateway stop, a local user cannot take them over (DNS udp and tcp, http, tls)', async () => {
    assert.equal((await world.sbx(['gateway', 'stop'])).code, 0);
    assert.equal(await bindAsNobody(listeners.dns, 'udp'), 'EACCES');
    for (const p of [listeners.dns, listeners.http, listeners.tls]) assert.equal(await bindAsNobody(p, 'tcp'), 'EACCES');
  });

  it('control: the same user may listen on a port of its own', async () => {
    assert.equal(await bindAsNobody(0, 'tcp'), 'ok');
  });
});
