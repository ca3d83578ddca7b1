// Several users on one engine, with no configuration: each SBX_HOME gets its own agent, volume,
// control socket and gateway port, and the same sandbox name in both is two sandboxes whose URLs
// answer for their own.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AgentWorld } from '../agent-world.ts';
import { curl, eventually, run } from '../helpers.ts';

describe('two homes on one engine, agent mode, default ports', () => {
  const worlds = [new AgentWorld(), new AgentWorld()];
  for (const w of worlds) delete w.env.SBX_GATEWAY_PORT; // the default: the first free from 7070

  before(async () => {
    for (const [i, w] of worlds.entries()) {
      await w.json(['create', '--name', 'web', '-p', '8080']);
      const put = await w.sbx(['exec', 'web', '--', 'sh', '-c', `mkdir -p /srv && echo home-${i} > /srv/who.txt`]);
      assert.equal(put.code, 0, put.stderr);
      assert.equal((await w.sbx(['exec', '-d', 'web', '--', 'python3', '-m', 'http.server', '8080', '-d', '/srv'])).code, 0);
    }
  });
  after(async () => {
    for (const w of worlds) await w.cleanup();
  });

  it('each gets working URLs on its own port, answering for its own sandbox of the same name', async () => {
    const urls = await Promise.all(worlds.map(async (w) => (await w.json(['port', 'ls', 'web']))[0].url as string));
    const ports = urls.map((u) => Number(new URL(u).port));
    assert.notEqual(ports[0], ports[1], urls.join(' '));
    for (const p of ports) assert.ok(p >= 7070 && p < 7170, `${p}: from 7070 up`);
    for (const [i, url] of urls.entries()) {
      await eventually(async () => (await curl([`${url}who.txt`])).status === 200, `${url} answers`);
      assert.equal((await curl([`${url}who.txt`])).body.trim(), `home-${i}`);
    }
  });

  it('attack: a host process with the id a system user often gets (999:999) cannot connect into a sandbox; control: root can', async () => {
    const ip = (await worlds[0]!.json(['inspect', 'web'])).ip as string;
    const as = (ids: string[]) => run('setpriv', [...ids, 'curl', '-s', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', `http://${ip}:8080/who.txt`]);
    assert.equal((await as(['--reuid=999', '--regid=999', '--clear-groups'])).stdout, '000');
    assert.equal((await run('curl', ['-s', '-m', '3', '-o', '/dev/null', '-w', '%{http_code}', `http://${ip}:8080/who.txt`])).stdout, '200');
  });

  it('each has its own agent, volume and control socket', async () => {
    const [a, b] = worlds.map((w) => w.names);
    assert.notEqual(a!.container, b!.container);
    for (const w of worlds) {
      const r = await w.docker('inspect', '--format', '{{.State.Running}}', w.names.container);
      assert.equal(r.stdout.trim(), 'true');
    }
  });

  it('a port given with SBX_GATEWAY_PORT that the other holds: the error names it, and nothing is left', async () => {
    const taken = Number(new URL((await worlds[0]!.json(['port', 'ls', 'web']))[0].url).port);
    const third = new AgentWorld({ SBX_GATEWAY_PORT: String(taken), SBX_AGENT_START_TIMEOUT_MS: '15000' });
    try {
      const r = await third.sbx(['create', '--name', 'x']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, new RegExp(`port ${taken}`), r.stderr);
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
      assert.deepEqual((await third.leftovers()).containers, []);
    } finally {
      await third.cleanup();
    }
  });
});
