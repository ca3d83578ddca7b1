// A sandbox's address given at once to the next one (issue 12's address plan frees a subnet with its
// network). With a pool of one /28 the next sandbox gets the very same address, so everything that
// knew the old sandbox by its address is attacked: the egress worker (which sandbox a DNS query or
// a proxied connection comes from, and so which policy judges it) and the gateway's routes (a URL
// of the removed sandbox, a request begun before the removal and finished after). Each attack sits
// beside a control that must pass. Root mode, both gateway engines; uses the fake internet:
//   flock /tmp/sbx-fi.lock node --test test/integration/address-reuse.test.ts
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { eventually, run, World } from '../helpers.ts';
import { startFakeInternet, type FakeInternet } from '../fake-internet.ts';

let fi: FakeInternet;
before(async () => {
  fi = await startFakeInternet();
});
after(() => fi?.stop());

/** A pool of a single /28: a freed subnet is the only one, so the next sandbox is given it. */
const ONE_SUBNET = '10.213.78.0/28';

async function sh(w: World, box: string, script: string): Promise<string> {
  return (await w.sbx(['exec', box, '--', 'sh', '-c', script])).stdout.trim();
}

/** A web server on 8000 in the sandbox that answers with the sandbox's name. */
async function serveName(w: World, box: string): Promise<void> {
  await sh(w, box, `mkdir -p /srv/www && echo "I am ${box}" > /srv/www/index.html`);
  await w.sbx(['exec', '-d', box, '--', 'python3', '-m', 'http.server', '-d', '/srv/www', '8000']);
  await eventually(async () => (await sh(w, box, 'curl -s -m 1 http://127.0.0.1:8000/')).includes(box), `${box}'s server`);
}

/**
 * A raw HTTP/1.1 exchange with the gateway: `head` first, then (once `between` is done, if the
 * gateway has not closed the connection meanwhile) the rest. What came back, once both are over.
 */
async function slowRequest(port: number, head: string, between: () => Promise<void>, rest: string): Promise<string> {
  const s = connect(port, '127.0.0.1');
  let got = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => (got += d));
  s.on('error', () => {}); // a reset or a write after the gateway closed: what came back is judged
  const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
  await new Promise<void>((resolve) => s.write(head, () => resolve()));
  try {
    await between();
  } catch (err) {
    s.destroy();
    throw err;
  }
  if (!s.destroyed) s.write(rest);
  const timer = setTimeout(() => s.destroy(), 10_000);
  await closed;
  clearTimeout(timer);
  return got;
}

for (const [engine, env] of [['nginx', {}], ['node', { SBX_GATEWAY_ENGINE: 'node' }]] as const) {
  describe(`a removed sandbox's address, given at once to the next one (${engine} engine)`, () => {
    let w: World;
    before(() => {
      w = new World({ ...env, SBX_SUBNET_POOL: ONE_SUBNET, SBX_DNS_UPSTREAM: fi.dnsUpstream });
    });
    after(() => w.cleanup());

    it('attack: the next sandbox on the freed address is judged by its own policy, not the old one\'s (DNS and the proxy)', async () => {
      await w.sbx(['rm', '-f', 'old', 'next']); // (what an earlier failure left)
      const a = await w.json(['create', '--name', 'old', '--block-network', '--allow-out', 'allowed.test']);
      await w.put('old', 'probe.py', '/probe.py');
      // The worker now knows this address as old's, and old's policy.
      assert.equal(await sh(w, 'old', 'python3 /probe.py resolve allowed.test 4'), 'ok 198.18.0.1');
      assert.match(await sh(w, 'old', 'curl -s -m 5 http://allowed.test/'), /^198\.18\.0\.1 80 allowed\.test/);
      await w.json(['rm', '-f', 'old']);
      const b = await w.json(['create', '--name', 'next', '--block-network', '--allow-out', 'other.test']);
      assert.equal(b.ip, a.ip, 'the pool of one /28 gives the next sandbox the same address');
      await w.put('next', 'probe.py', '/probe.py');
      // Control: next's own names (other.test's address is learned: 80 there goes to the proxy).
      assert.equal(await sh(w, 'next', 'python3 /probe.py resolve other.test 4'), 'ok 198.18.0.3');
      assert.match(await sh(w, 'next', 'curl -s -m 5 http://other.test/'), /^198\.18\.0\.3 80 other\.test/);
      // Attack: old's names, by DNS and through the proxy (a Host header on an address next reaches).
      assert.match(await sh(w, 'next', 'python3 /probe.py resolve allowed.test 4'), /^fail/);
      const viaProxy = await sh(w, 'next', "curl -s -m 5 -o /dev/null -w '%{http_code}' --resolve allowed.test:80:198.18.0.3 http://allowed.test/");
      assert.equal(viaProxy, '403', "allowed.test through the proxy is refused by next's policy");
      await w.json(['rm', '-f', 'next']);
    });

    it("attack: the removed sandbox's URL never reaches the next one on its address, even a request begun before the removal", async () => {
      await w.sbx(['rm', '-f', 'old', 'next']); // (what an earlier failure left: the pool holds one)
      const a = await w.json(['create', '--name', 'first', '-p', '8000']);
      await serveName(w, 'first');
      const gw = w.gatewayPort();
      const host = `8000-first.sbx.localhost:${gw}`;
      // Control: the URL serves first.
      assert.match((await run('curl', ['-s', '-m', '5', w.url(8000, 'first')])).stdout, /I am first/);
      let b: any;
      // A request to first's URL whose head is finished only once "second" serves on first's address.
      const answer = await slowRequest(gw, `GET / HTTP/1.1\r\nHost: ${host}\r\n`, async () => {
        await w.json(['rm', '-f', 'first']);
        b = await w.json(['create', '--name', 'second']);
        assert.equal(b.ip, a.ip, 'the pool of one /28 gives the next sandbox the same address');
        await serveName(w, 'second');
      }, 'Connection: close\r\n\r\n');
      assert.doesNotMatch(answer, /I am second/, `the old request reached the new sandbox: ${answer}`);
      // A new request to the old URL: 404, never second's page.
      const again = await run('curl', ['-s', '-m', '5', '-w', '\n%{http_code}', w.url(8000, 'first')]);
      assert.match(again.stdout, /\n404$/);
      assert.doesNotMatch(again.stdout, /I am second/);
      // Control: second's own port, once exposed, serves it.
      await w.json(['port', 'expose', 'second', '8000']);
      assert.match((await run('curl', ['-s', '-m', '5', w.url(8000, 'second')])).stdout, /I am second/);
      await w.json(['rm', '-f', 'second']);
      assert.deepEqual(await w.leftovers(), { containers: [], networks: [], tables: [] });
    });
  });
}
