// The network log's pure parts: the bounded ring, the rate gate, the book, the worker's entries
// checked, the kernel's decision named, `network check`'s destination and decision, and the log
// rules in a sandbox's nft script.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '../../src/core/errors.ts';
import { compilePolicy as compileNormal, normalizePolicy, type CompiledPolicy, type NetworkPolicyInput } from '../../src/core/network-policy.ts';
import { LOG_CAPACITY, LogRing, RateGate, matches, type NetworkLogEntry } from '../../src/core/network-log.ts';
import { answerMayGive, kernelDecision, SANDBOX_RULE } from '../../src/core/kernel-decision.ts';
import { NetworkLogBook, checkedEntry } from '../../src/gateway/network-log-book.ts';
import { kernelEntry, logGroupOf } from '../../src/gateway/network-log-service.ts';
import { checkConnection, parseCheckDestination, DEFAULT_CHECK_PORT } from '../../src/api/network-check.ts';
import { logPrefix, removeScript, rulesScript } from '../../src/net/nft-rules.ts';
import type { NflogPacket } from '../../src/net/nflog.ts';

const compilePolicy = (input: NetworkPolicyInput): CompiledPolicy => compileNormal(normalizePolicy(input));
const entry = (n: number, verdict: 'allowed' | 'blocked' = 'blocked', time = new Date().toISOString()): NetworkLogEntry => ({ time, source: 'kernel', protocol: 'tcp', address: '198.18.0.1', port: n, verdict, rule: 'mode block-all' });

describe('LogRing: a sandbox keeps its last entries, never more', () => {
  it('holds at most its capacity, oldest dropped first, in order', () => {
    const r = new LogRing(5);
    for (let i = 1; i <= 12; i++) r.push(entry(i));
    assert.equal(r.size, 5);
    assert.deepEqual(r.list().map((e) => e.port), [8, 9, 10, 11, 12]);
  });
  it('the default is 10,000', () => {
    const r = new LogRing();
    for (let i = 0; i < LOG_CAPACITY + 2_500; i++) r.push(entry(i % 65535 || 1));
    assert.equal(r.size, LOG_CAPACITY);
  });
  it('filters by verdict and by time', () => {
    const r = new LogRing(10);
    r.push(entry(1, 'allowed', '2026-12-04T10:00:00.000Z'));
    r.push(entry(2, 'blocked', '2026-12-04T10:00:05.000Z'));
    r.push(entry(3, 'allowed', '2026-12-04T10:00:10.000Z'));
    assert.deepEqual(r.list({ blocked: true }).map((e) => e.port), [2]);
    assert.deepEqual(r.list({ since: Date.parse('2026-12-04T10:00:05.000Z') }).map((e) => e.port), [2, 3]);
    assert.equal(matches(entry(4, 'allowed'), { blocked: true }), false);
  });
});

describe('RateGate: a flood in one sandbox costs the others nothing', () => {
  it('lets a burst through, then the rate, per key, and counts what it drops', () => {
    const g = new RateGate(100, 500);
    const t0 = 1_000_000;
    let passed = 0;
    for (let i = 0; i < 100_000; i++) if (g.take('flood', t0)) passed++;
    assert.equal(passed, 500);
    assert.equal(g.dropped('flood'), 99_500);
    assert.equal(g.dropped('flood'), 0, 'the count is forgotten once read');
    assert.equal(g.take('quiet', t0), true, 'another key has its own bucket');
    let later = 0;
    for (let i = 0; i < 1000; i++) if (g.take('flood', t0 + 1000)) later++;
    assert.equal(later, 100, 'a second later: the rate');
  });
});

describe('NetworkLogBook', () => {
  it('holds at most its total: the fullest ring loses its oldest first', () => {
    const book = new NetworkLogBook(1000, 300);
    for (let i = 1; i <= 250; i++) book.add('big', entry(i));
    for (let i = 1; i <= 100; i++) book.add('small', entry(i));
    assert.ok(book.size <= 300, String(book.size));
    assert.equal(book.list('small').length, 100, 'the quieter sandbox keeps its entries');
    assert.equal(book.list('big').at(-1)!.port, 250, 'the fullest keeps its newest');
    book.drop('big');
    assert.equal(book.size, 100);
  });
  it('names an address from a DNS answer; forgets a removed sandbox and ends its followers', () => {
    const book = new NetworkLogBook(3);
    const seen: number[] = [];
    let ended = 0;
    book.follow('a1', { blocked: true }, (e) => seen.push(e.port!), () => ended++);
    book.add('a1', { time: new Date().toISOString(), source: 'dns', protocol: 'dns', name: 'vhost-a.test', verdict: 'allowed', rule: 'allowOut vhost-a.test', type: 'A', answers: ['198.18.0.6'] });
    assert.equal(book.nameOf('a1', '198.18.0.6'), 'vhost-a.test');
    assert.equal(book.nameOf('b2', '198.18.0.6'), undefined, 'names are per sandbox');
    for (let i = 1; i <= 5; i++) book.add('a1', entry(i, i % 2 ? 'blocked' : 'allowed'));
    book.add('b2', entry(99));
    assert.deepEqual(seen, [1, 3, 5], 'followers get new entries that match their filter');
    assert.equal(book.list('a1').length, 3, 'bounded per sandbox');
    assert.equal(book.size, 4);
    book.keepOnly(new Set(['b2']));
    assert.equal(ended, 1);
    assert.deepEqual(book.list('a1'), []);
    assert.equal(book.nameOf('a1', '198.18.0.6'), undefined);
    assert.equal(book.size, 1);
  });
});

describe("checkedEntry: the egress worker's entries are checked, field by field", () => {
  const good = { time: new Date().toISOString(), source: 'proxy', protocol: 'tcp', address: '198.18.0.6', port: 443, name: 'vhost-a.test', verdict: 'blocked', rule: 'mode block-all' };
  it('keeps a good entry', () => {
    assert.deepEqual(checkedEntry(good), good);
    const dns = { time: good.time, source: 'dns', protocol: 'dns', name: 'nx.test', verdict: 'blocked', rule: 'mode block-all', type: 'AAAA' };
    assert.deepEqual(checkedEntry(dns), dns);
  });
  it('refuses what is off', () => {
    for (const bad of [
      null,
      'x',
      { ...good, source: 'kernel' },
      { ...good, protocol: 'udp' },
      { ...good, verdict: 'maybe' },
      { ...good, rule: '' },
      { ...good, rule: 'a\nb' },
      { ...good, address: 'not-an-ip' },
      { ...good, port: 0 },
      { ...good, port: 70000 },
      { ...good, name: '' },
      { ...good, answers: ['1.2.3.4', 'nope'] },
    ]) assert.equal(checkedEntry(bad), undefined, JSON.stringify(bad));
  });
  it('shows what a sandbox made hard to show, rather than drop it', () => {
    assert.equal(checkedEntry({ ...good, name: 'evil\u001b[31m.test' })!.name, 'evil\\x1b[31m.test', 'escapes, so a terminal sees no escape sequence');
    assert.equal(checkedEntry({ ...good, name: 'x'.repeat(300) })!.name, `${'x'.repeat(252)}...`);
    assert.equal(checkedEntry({ ...good, source: 'dns', protocol: 'dns', type: 'UNKNOWN_65' })!.type, 'TYPE65');
    assert.equal(checkedEntry({ ...good, source: 'dns', protocol: 'dns', type: 'a; rm' })!.type, undefined);
    const many = Array.from({ length: 100 }, (_, i) => `2001:db8::${i.toString(16)}`);
    assert.equal(checkedEntry({ ...good, source: 'dns', protocol: 'dns', answers: many })!.answers!.length, 16);
  });
  it("the gateway's time when the worker's is far off", () => {
    const e = checkedEntry({ ...good, time: '1999-01-01T00:00:00.000Z' })!;
    assert.ok(Math.abs(Date.parse(e.time) - Date.now()) < 5_000);
  });
});

describe('kernelDecision: what the rules decide, named in the words of the policy', () => {
  it('another sandbox, whatever the entries', () => {
    const p = compilePolicy({ mode: 'allow-all', allowOut: ['172.30.0.0/16'] });
    assert.deepEqual(kernelDecision(p, { address: '172.30.0.2', port: 80, sandbox: true }), { allowed: false, rule: SANDBOX_RULE });
  });
  it('a default-denied host address, and a host entry that opens it', () => {
    assert.deepEqual(kernelDecision(compilePolicy({ mode: 'allow-all' }), { address: '198.19.255.1', port: 22, toHost: true }), { allowed: false, rule: 'default: host address' });
    assert.deepEqual(kernelDecision(compilePolicy({ mode: 'allow-all', allowOut: ['host:22'] }), { address: '198.19.255.1', port: 22, toHost: true }), { allowed: true, rule: 'allowOut host:22' });
    assert.deepEqual(kernelDecision(compilePolicy({ mode: 'allow-all', allowOut: ['host:22'] }), { address: '198.19.255.1', toHost: true }), { allowed: false, rule: 'default: host address' }, 'ICMP: only a bare host entry opens it');
    assert.deepEqual(kernelDecision(compilePolicy({ mode: 'allow-all', allowOut: ['host'] }), { address: '198.19.255.1', toHost: true }), { allowed: true, rule: 'allowOut host' });
  });
  it('address, CIDR, port and mode', () => {
    assert.deepEqual(kernelDecision(compilePolicy({ mode: 'allow-all', denyOut: ['198.18.0.0/24'] }), { address: '198.18.0.9', port: 80 }), { allowed: false, rule: 'denyOut 198.18.0.0/24' });
    assert.deepEqual(kernelDecision(compilePolicy({ mode: 'block-all', allowOut: ['198.18.0.9'] }), { address: '198.18.0.9', port: 80 }), { allowed: true, rule: 'allowOut 198.18.0.9' });
    assert.deepEqual(kernelDecision(compilePolicy({ mode: 'block-all' }), { address: '198.18.0.9', port: 80 }), { allowed: false, rule: 'mode block-all' });
    assert.deepEqual(kernelDecision(compilePolicy({ mode: 'allow-all', denyPorts: ['25'] }), { address: '198.18.0.9', port: 25 }), { allowed: false, rule: 'denyPorts 25' });
  });
  it('a name counts only where a name:port entry opens the port', () => {
    const p = compilePolicy({ mode: 'block-all', allowOut: ['db.test:5432', 'web.test'] });
    assert.deepEqual(kernelDecision(p, { address: '198.18.0.7', port: 5432, name: 'db.test' }), { allowed: true, rule: 'allowOut db.test:5432' });
    assert.deepEqual(kernelDecision(p, { address: '198.18.0.7', port: 5433, name: 'db.test' }), { allowed: false, rule: 'mode block-all' });
    assert.deepEqual(kernelDecision(p, { address: '198.18.0.8', port: 22, name: 'web.test' }), { allowed: false, rule: 'mode block-all' }, 'a plain name opens only the proxy');
  });
  it("answerMayGive: what sbx's forwarder gives a sandbox", () => {
    const p = compilePolicy({ mode: 'allow-all' });
    assert.equal(answerMayGive(p, '198.18.0.1', { host: false, sandbox: false }), true);
    assert.equal(answerMayGive(p, '10.0.0.1', { host: false, sandbox: false }), false);
    assert.equal(answerMayGive(p, '198.19.255.1', { host: true, sandbox: false }), false);
    assert.equal(answerMayGive(compilePolicy({ allowOut: ['host'] }), '198.19.255.1', { host: true, sandbox: false }), true);
    assert.equal(answerMayGive(p, '198.18.3.3', { host: false, sandbox: true }), false);
    assert.equal(answerMayGive(compilePolicy({ allowOut: ['10.0.0.1'] }), '10.0.0.1', { host: false, sandbox: false }), true);
  });
});

describe('kernelEntry: an nflog packet as a log entry', () => {
  const packet = (o: Partial<NflogPacket>): NflogPacket => ({ prefix: logPrefix('abc1234567', false), hook: 2, family: 4, protocol: 'tcp', source: '172.30.0.2', destination: '198.18.0.9', destinationPort: 8080, time: new Date('2026-12-04T10:00:00Z'), ...o });
  const world = { isSandbox: (a: string) => a === '172.30.0.3' };
  it('the verdict is the kernel\'s; the rule the decision\'s', () => {
    const p = compilePolicy({ mode: 'block-all' });
    assert.deepEqual(kernelEntry(packet({}), false, p, undefined, world), { time: '2026-12-04T10:00:00.000Z', source: 'kernel', protocol: 'tcp', address: '198.18.0.9', port: 8080, verdict: 'blocked', rule: 'mode block-all' });
    assert.equal(kernelEntry(packet({ hook: 1, destination: '198.19.255.1' }), false, compilePolicy({ mode: 'allow-all' }), undefined, world).rule, 'default: host address');
    assert.equal(kernelEntry(packet({ destination: '172.30.0.3' }), false, compilePolicy({ mode: 'allow-all' }), undefined, world).rule, SANDBOX_RULE);
    const learned = kernelEntry(packet({}), true, compilePolicy({ mode: 'block-all', allowOut: ['db.test:8080'] }), 'db.test', world);
    assert.equal(learned.name, 'db.test');
    assert.equal(learned.rule, 'allowOut db.test:8080');
  });
  it('a policy that changed since the packet says so', () => {
    assert.equal(kernelEntry(packet({}), true, compilePolicy({ mode: 'block-all' }), undefined, world).rule, 'mode block-all (the policy changed since)');
  });
  it('the nflog group is one per home, in 20000-59999', () => {
    const g = logGroupOf('/nonexistent/home-a');
    assert.equal(g, logGroupOf('/nonexistent/home-a'));
    assert.ok(g >= 20_000 && g < 60_000);
  });
});

describe('network check: DEST[:PORT] and the decision along the path packets take', () => {
  it('parses names, addresses and ports; refuses the rest with a usage error', () => {
    assert.deepEqual(parseCheckDestination('example.test'), { name: 'example.test', port: DEFAULT_CHECK_PORT });
    assert.deepEqual(parseCheckDestination('example.test:22'), { name: 'example.test', port: 22 });
    assert.deepEqual(parseCheckDestination('198.18.0.1:53'), { address: '198.18.0.1', port: 53 });
    assert.deepEqual(parseCheckDestination('2001:db8::1'), { address: '2001:db8::1', port: DEFAULT_CHECK_PORT });
    assert.deepEqual(parseCheckDestination('[2001:db8::1]:80'), { address: '2001:db8::1', port: 80 });
    for (const bad of ['', 'a b', 'x.test:0', 'x.test:65536', 'x.test:http', '1.2.3.4:', 'x.test:99999999']) assert.throws(() => parseCheckDestination(bad), UsageError, bad);
  });
  const world = (answers: Record<string, string[]>) => ({
    resolve: async (n: string) => answers[n] ?? [],
    isHost: (a: string) => a === '198.19.255.1',
    isSandbox: (a: string) => a.startsWith('172.30.'),
  });
  it('a name the forwarder refuses stops at DNS', async () => {
    const p = compilePolicy({ mode: 'block-all', allowOut: ['ok.test'] });
    assert.deepEqual(await checkConnection(p, { name: 'other.test', port: 443 }, world({})), { path: 'dns', verdict: 'blocked', rule: 'mode block-all' });
  });
  it('TCP 80/443 of a policy with names: the proxy decides', async () => {
    const p = compilePolicy({ mode: 'block-all', allowOut: ['ok.test'] });
    assert.deepEqual(await checkConnection(p, { name: 'ok.test', port: 443 }, world({ 'ok.test': ['198.18.0.5'] })), { path: 'proxy', verdict: 'allowed', rule: 'allowOut ok.test', address: '198.18.0.5', addresses: ['198.18.0.5'] });
    assert.equal((await checkConnection(p, { address: '198.18.0.5', port: 443 }, world({}))).verdict, 'blocked', 'by address in block-all');
  });
  it('other ports: the kernel, with a name only through name:port', async () => {
    const p = compilePolicy({ mode: 'block-all', allowOut: ['ok.test', 'db.test:5432'] });
    const w = world({ 'ok.test': ['198.18.0.5'], 'db.test': ['198.18.0.6'] });
    assert.deepEqual(await checkConnection(p, { name: 'ok.test', port: 22 }, w), { path: 'kernel', verdict: 'blocked', rule: 'mode block-all', address: '198.18.0.5', addresses: ['198.18.0.5'] });
    assert.deepEqual(await checkConnection(p, { name: 'db.test', port: 5432 }, w), { path: 'kernel', verdict: 'allowed', rule: 'allowOut db.test:5432', address: '198.18.0.6', addresses: ['198.18.0.6'] });
    assert.equal((await checkConnection(p, { name: 'db.test', port: 5432, udp: true }, w)).verdict, 'allowed');
  });
  it('a name that resolves only to what the forwarder withholds is blocked with the guard', async () => {
    const p = compilePolicy({ mode: 'allow-all' });
    assert.deepEqual(await checkConnection(p, { name: 'rebind.test', port: 22 }, world({ 'rebind.test': ['10.0.0.1'] })), { path: 'dns', verdict: 'blocked', rule: 'default: protected address', addresses: ['10.0.0.1'] });
    assert.equal((await checkConnection(p, { address: '198.19.255.1', port: 22 }, world({}))).rule, 'default: host address');
    assert.equal((await checkConnection(p, { address: '172.30.0.9', port: 22 }, world({}))).rule, SANDBOX_RULE);
  });
  it("DNS to a host address is sbx's forwarder's; IPv6 only with --ipv6", async () => {
    assert.deepEqual(await checkConnection(compilePolicy({ mode: 'allow-all' }), { address: '198.19.255.1', port: 53, udp: true }, world({})), { path: 'dns', verdict: 'allowed', rule: "default: sbx's DNS forwarder", address: '198.19.255.1' });
    assert.equal((await checkConnection(compilePolicy({ mode: 'block-all' }), { address: '198.19.255.1', port: 53, udp: true }, world({}))).verdict, 'blocked', 'block-all without names: no DNS at all');
    const p = compilePolicy({ mode: 'allow-all' });
    assert.equal((await checkConnection(p, { address: '2001:2::3', port: 22 }, world({}))).rule, 'default: no IPv6 (the sandbox was created without --ipv6)');
    assert.equal((await checkConnection(p, { address: '2001:2::3', port: 22 }, { ...world({}), ipv6: true })).verdict, 'allowed');
  });
});

describe('the log rules in a sandbox\'s nft script', () => {
  const link = { id: 'abc1234567', bridge: 'sbx-abc1234567' };
  const p = compilePolicy({ mode: 'block-all', allowOut: ['198.18.0.0/24'] });
  it('with a log group: verdicts go through chains that log new connections, rate-limited', () => {
    const s = rulesScript(link, p, { listeners: { dns: 53, proxy: 3129, log: 23456 } as never });
    assert.match(s, /add rule inet sbx allowed_abc1234567 ct state new limit rate 50\/second burst 200 packets log prefix "sbx:abc1234567:a" group 23456\n/);
    assert.match(s, /add rule inet sbx refused_abc1234567 ct state new limit rate 50\/second burst 200 packets log prefix "sbx:abc1234567:r" group 23456\n/);
    assert.match(s, /add rule inet sbx refused_abc1234567 goto refuse\n/);
    assert.match(s, /ip daddr @allow4_abc1234567 goto allowed_abc1234567\n/);
    assert.match(s, /add rule inet sbx egress_abc1234567 goto refused_abc1234567\n/);
    assert.ok(removeScript('abc1234567').includes('delete chain inet sbx refused_abc1234567'));
  });
  it('without one: no log rules at all', () => {
    const s = rulesScript(link, p, { listeners: { dns: 53, proxy: 3129 } as never });
    assert.doesNotMatch(s, / log /);
    assert.doesNotMatch(s, /allowed_abc|refused_abc/);
  });
});
