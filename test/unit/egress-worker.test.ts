// The egress worker without Docker: the channel between gateway and worker, the gateway's checks
// of what a worker asks, the choice of user, and the real worker process (its TypeScript entry,
// as the test's own user) driven by the supervisor: policies pushed and judged by, DNS answers
// sent only after the gateway learned them, and a worker that dies replaced (then given up on).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import dnsPacket from 'dns-packet';
import { compilePolicy, normalizePolicy, type CompiledPolicy, type NetworkPolicy, type NetworkPolicyInput } from '../../src/core/network-policy.ts';
import { Peer, type Endpoint, type LearnedAnswer } from '../../src/gateway/egress-ipc.ts';
import { checkedAnswers, EgressSupervisor } from '../../src/gateway/egress-supervisor.ts';
import { parserUser, passwdEntry } from '../../src/gateway/egress-user.ts';
import type { EgressListeners } from '../../src/net/nft-rules.ts';

/** Resolves once `done()` holds (checked every 20 ms, 10 s at most). */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !done(); i++) await delay(20);
}

const ENTRY = join(import.meta.dirname, '..', '..', 'src', 'gateway', 'egress-worker-main.ts');
const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Two connected endpoints in one process (what fork's IPC channel is across two). */
function pair(): [Endpoint, Endpoint] {
  const a = new EventEmitter() as EventEmitter & Endpoint;
  const b = new EventEmitter() as EventEmitter & Endpoint;
  a.send = (m) => (setImmediate(() => b.emit('message', JSON.parse(JSON.stringify(m)))), true);
  b.send = (m) => (setImmediate(() => a.emit('message', JSON.parse(JSON.stringify(m)))), true);
  return [a, b];
}

type Ping = { ping: { args: { n: number }; result: number }; fail: { args: Record<string, never>; result: null }; slow: { args: Record<string, never>; result: null } };

describe('the channel', () => {
  it('pairs questions and answers, carries errors, times out, and fails what is open when closed', async () => {
    const [x, y] = pair();
    const never = new Promise<never>(() => {});
    const asker = new Peer<Ping, Record<string, never>>(x, {});
    new Peer<Record<string, never>, Ping>(y, {
      ping: async (a) => (a as { n: number }).n * 2,
      fail: async () => {
        throw new Error('no');
      },
      slow: () => never,
    });
    assert.deepEqual(await Promise.all([asker.ask('ping', { n: 1 }), asker.ask('ping', { n: 21 })]), [2, 42]);
    await assert.rejects(asker.ask('fail', {}), /^Error: no$/);
    await assert.rejects(asker.ask('slow', {}, 50), /no answer to slow within 50 ms/);
    await assert.rejects(asker.ask('nope' as 'ping', { n: 1 }), /unknown question nope/);
    const open = asker.ask('slow', {});
    asker.close(new Error('gone'));
    await assert.rejects(open, /gone/);
    await assert.rejects(asker.ask('ping', { n: 1 }), /gone/);
  });
});

describe("the gateway's checks of a worker's learn question", () => {
  it('takes plain addresses of their family, with finite TTLs', () => {
    assert.deepEqual(checkedAnswers([{ address: '198.18.0.1', family: 4, ttl: 30 }, { address: '2001:2::4', family: 6, ttl: 0 }]), [
      { address: '198.18.0.1', family: 4, ttl: 30 },
      { address: '2001:2::4', family: 6, ttl: 0 },
    ]);
  });
  it('refuses anything that could be more than an address in an nft script', () => {
    for (const bad of [
      { address: '1.2.3.4 } ; flush ruleset ; add element inet x y { 5.6.7.8', family: 4, ttl: 1 },
      { address: 'fe80::1%eth0', family: 6, ttl: 1 },
      { address: '198.18.0.1', family: 6, ttl: 1 },
      { address: '2001:2::4', family: 4, ttl: 1 },
      { address: 'example.test', family: 4, ttl: 1 },
      { address: '198.18.0.1', family: 4, ttl: -1 },
      { address: '198.18.0.1', family: 4, ttl: Number.NaN },
      { address: '198.18.0.1', family: 4 },
      { address: ['198.18.0.1'], family: 4, ttl: 1 },
      null,
    ]) {
      assert.throws(() => checkedAnswers([bad]), /refused/, JSON.stringify(bad));
    }
    assert.throws(() => checkedAnswers('198.18.0.1'), /refused/);
    assert.throws(() => checkedAnswers(Array(1025).fill({ address: '198.18.0.1', family: 4, ttl: 1 })), /refused/);
  });
});

describe('which user parses untrusted traffic', () => {
  const passwd = 'root:x:0:0:root:/root:/bin/bash\nsbx-gateway:x:999:995::/home/sbx-gateway:/usr/sbin/nologin\n';
  it('sbx-gateway when the gateway is root and the user exists', () => {
    assert.deepEqual(passwdEntry('sbx-gateway', passwd), { uid: 999, gid: 995 });
    const dir = mkdtempSync(join(tmpdir(), 'sbx-passwd-'));
    try {
      writeFileSync(join(dir, 'passwd'), passwd);
      assert.deepEqual(parserUser({ uid: 0, passwd: join(dir, 'passwd') }), { name: 'sbx-gateway', uid: 999, gid: 995, drop: true });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const none = parserUser({ uid: 0, passwd: '/dev/null' });
    assert.equal(none.drop, false);
    assert.match(none.why!, /there is no sbx-gateway user \(scripts\/setup creates it\)/);
  });
  it('the gateway\'s own user when it is not root, and says why', () => {
    const u = parserUser({ uid: 1000 });
    assert.equal(u.drop, false);
    assert.match(u.why!, /does not run as root/);
  });
});

/** A DNS upstream on loopback: allowed.test and other.test are 198.18.0.1. */
function fakeUpstream(): Promise<{ port: number; close(): void }> {
  const s: UdpSocket = createSocket('udp4');
  s.on('message', (msg, r) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions![0]!;
    const answers = question.type === 'A' ? [{ type: 'A' as const, name: question.name, ttl: 30, data: '198.18.0.1' }] : [];
    s.send(dnsPacket.encode({ type: 'response', id: q.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions, answers }), r.port, r.address);
  });
  return new Promise((resolve) => s.bind(0, '127.0.0.1', () => resolve({ port: s.address().port, close: () => s.close() })));
}

function dnsAsk(port: number, name: string): Promise<{ rcode: string; data: string[]; ms: number }> {
  const s = createSocket('udp4');
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => (s.close(), reject(new Error(`no answer for ${name}`))), 3000);
    s.on('message', (m) => {
      clearTimeout(t);
      s.close();
      const p = dnsPacket.decode(m) as dnsPacket.DecodedPacket & { rcode: string };
      resolve({ rcode: p.rcode, data: (p.answers ?? []).map((a) => String((a as { data: unknown }).data)), ms: performance.now() - started });
    });
    s.send(dnsPacket.encode({ type: 'query', id: 7, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: 'A', name, class: 'IN' }] }), port, '127.0.0.1');
  });
}

function httpAsk(port: number, host: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`));
    let text = '';
    s.on('data', (d) => (text += d));
    s.on('close', () => resolve(text));
    s.on('error', reject);
  });
}

describe('the worker process, driven by the supervisor', () => {
  let upstream: Awaited<ReturnType<typeof fakeUpstream>>;
  let policy: NetworkPolicy;
  let learnDelay = 0;
  let learnAnswer = true;
  const learned: Array<{ id: string; name: string; answers: LearnedAnswer[] }> = [];
  const restarts: EgressListeners[] = [];
  const fatal: Error[] = [];
  const logs: string[] = [];
  let sup: EgressSupervisor;
  const set = (input: NetworkPolicyInput) => (policy = normalizePolicy(input));
  let compiled: CompiledPolicy;

  before(async () => {
    upstream = await fakeUpstream();
    set({ mode: 'block-all', allowOut: ['allowed.test:8080'] });
    sup = new EgressSupervisor({
      entry: ENTRY,
      home: '/nonexistent-home',
      upstream: { host: '127.0.0.1', port: upstream.port },
      user: { name: 'self', uid: process.getuid!(), gid: process.getgid!(), drop: false },
      log: (l) => logs.push(l),
      judged: () => new Map([['box1', policy]]),
      policyOf: (id) => (id === 'box1' ? (compiled = compiled?.policy === policy ? compiled : compilePolicy(policy)) : undefined),
      learn: async (id, name, answers) => {
        await delay(learnDelay);
        learned.push({ id, name, answers });
        return learnAnswer;
      },
      // Every loopback address is sandbox box1's.
      networks: async () => new Map([['box1', { subnet: '127.0.0.0/8', gateway: '127.0.0.1' }]]),
      restarted: async (l) => void restarts.push(l),
      fatal: (err) => void fatal.push(err),
      maxRestartsPerMinute: 1,
    });
    await sup.start();
  });
  after(async () => {
    await sup?.close();
    upstream?.close();
  });

  it('listens, judges DNS by the pushed policy, and answers only after the gateway learned', async () => {
    const l = sup.listeners!;
    assert.ok(l.dns > 0 && l.http > 0 && l.tls > 0);
    learnDelay = 300;
    const a = await dnsAsk(l.dns, 'allowed.test');
    assert.deepEqual([a.rcode, a.data], ['NOERROR', ['198.18.0.1']]);
    assert.ok(a.ms >= 290, `answered after ${a.ms} ms: before the gateway had learned`);
    assert.deepEqual(learned.at(-1), { id: 'box1', name: 'allowed.test', answers: [{ address: '198.18.0.1', family: 4, ttl: 30 }] });
    learnDelay = 0;
    assert.equal((await dnsAsk(l.dns, 'other.test')).rcode, 'NXDOMAIN', 'block-all: only allowed names resolve');
    learnAnswer = false;
    assert.equal((await dnsAsk(l.dns, 'allowed.test')).rcode, 'NXDOMAIN', "the gateway's judge refuses: NXDOMAIN");
    learnAnswer = true;
  });

  it('a pushed policy is judged by at once (the proxy says why it refuses)', async () => {
    const l = sup.listeners!;
    assert.match(await httpAsk(l.http, 'other.test'), /^HTTP\/1\.1 403[^]*sbx: other\.test is not in this sandbox's egress allow list/);
    set({ mode: 'allow-all', denyOut: ['other.test'] });
    await sup.update({ recheck: true });
    assert.match(await httpAsk(l.http, 'other.test'), /^HTTP\/1\.1 403[^]*sbx: other\.test is denied by this sandbox's egress policy/);
    assert.equal((await dnsAsk(l.dns, 'other.test')).rcode, 'NXDOMAIN');
    assert.equal((await dnsAsk(l.dns, 'allowed.test')).rcode, 'NOERROR');
  });

  it('a worker that dies is replaced (new ports); one that keeps dying is given up on', async () => {
    const first = sup.pid!;
    process.kill(first, 'SIGKILL');
    // Noticing a death takes a moment on a loaded machine: wait for it, then for the restart.
    await until(() => restarts.length > 0 || fatal.length > 0);
    await sup.settled();
    assert.equal(restarts.length, 1);
    assert.notEqual(sup.pid, first);
    assert.deepEqual(sup.listeners, restarts[0]);
    assert.equal((await dnsAsk(restarts[0]!.dns, 'allowed.test')).rcode, 'NOERROR', 'the new worker serves');
    assert.ok(logs.some((l) => /the worker \(pid \d+\) was killed \(SIGKILL\): starting another/.test(l)), logs.join('\n'));
    process.kill(sup.pid!, 'SIGKILL');
    await until(() => fatal.length > 0);
    await sup.settled();
    assert.equal(fatal.length, 1);
    assert.match(fatal[0]!.message, /the egress worker was killed \(SIGKILL\): 2 deaths within a minute, egress is broken/);
  });
});

describe('a worker whose gateway dies', () => {
  it('exits (its IPC channel closes)', async () => {
    // A stand-in gateway that starts a worker, says its pid, and is then killed outright.
    const parent = spawn(process.execPath, ['-e', `
      const c = require('node:child_process').fork(${JSON.stringify(ENTRY)}, [JSON.stringify({ home: '/nonexistent-home', upstream: { host: '127.0.0.1', port: 53 } })], { stdio: ['ignore', 'ignore', 'ignore', 'ipc'] });
      c.on('message', (m) => m.kind === 'ready' && process.stdout.write(c.pid + '\\n'));
    `], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = await new Promise<number>((resolve) => parent.stdout!.once('data', (d) => resolve(Number(String(d).trim()))));
    assert.ok(pid > 0);
    process.kill(parent.pid!, 'SIGKILL');
    const deadline = Date.now() + 5000;
    let alive = true;
    while (alive && Date.now() < deadline) {
      await delay(20);
      try {
        process.kill(pid, 0);
      } catch {
        alive = false;
      }
    }
    assert.equal(alive, false, 'the worker outlived its gateway');
  });
});

describe('a worker that cannot start', () => {
  it('makes start() fail with a clear error', async () => {
    const sup = new EgressSupervisor({
      entry: join(import.meta.dirname, 'no-such-worker.cjs'),
      home: '/nonexistent-home',
      upstream: { host: '127.0.0.1', port: 53 },
      user: { name: 'self', uid: process.getuid!(), gid: process.getgid!(), drop: false },
      log: () => {},
      judged: () => new Map(),
      policyOf: () => undefined,
      learn: async () => false,
      networks: async () => new Map(),
      restarted: async () => {},
      fatal: () => {},
    });
    await assert.rejects(sup.start(), /the egress worker \(DNS forwarder and proxy\) did not start: it exited \(1\)/);
  });

  it('and so does one that cannot become its user', { skip: process.getuid!() === 0 ? false : 'needs root to try' }, async () => {
    const sup = new EgressSupervisor({
      entry: ENTRY,
      home: '/nonexistent-home',
      upstream: { host: '127.0.0.1', port: 53 },
      // gid 0 with uid 0 is no drop at all; a uid that does not exist still works for setuid, so
      // ask for what the worker refuses to keep: it checks the switch held.
      user: { name: 'ghost', uid: 0, gid: 0, drop: true },
      log: () => {},
      judged: () => new Map(),
      policyOf: () => undefined,
      learn: async () => false,
      networks: async () => new Map(),
      restarted: async () => {},
      fatal: () => {},
    });
    await assert.rejects(sup.start(), /did not start: the switch to ghost did not hold/);
  });
});
