import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateName, newId, validateName, NAME_PATTERN } from '../../src/core/names.ts';
import { DEFAULT_PIDS_LIMIT, parseCpus, parseEnvPairs, parseMemory, parsePidsLimit, validateImage } from '../../src/core/options.ts';
import { resolveSandbox } from '../../src/core/resolve.ts';
import { NotFoundError, UsageError } from '../../src/core/errors.ts';
import { objectNames, type SandboxRecord } from '../../src/core/sandbox.ts';
import { parseAptSources, pickMirror } from '../../src/core/apt-sources.ts';
import { hardening } from '../../src/runtime/hardening.ts';

describe('names', () => {
  for (const good of ['a', 'demo', 'web-1', '0abc', 'a'.repeat(63)]) {
    it(`accepts ${good.slice(0, 20)}`, () => assert.equal(validateName(good), good));
  }
  for (const bad of ['', '-a', 'A', 'a_b', 'a.b', 'a'.repeat(64), 'ü']) {
    it(`rejects "${bad.slice(0, 20)}" with a usage error`, () => assert.throws(() => validateName(bad), UsageError));
  }
  it('generates valid, varied names and ids', () => {
    const names = new Set(Array.from({ length: 200 }, generateName));
    for (const n of names) assert.match(n, NAME_PATTERN);
    assert.ok(names.size > 190);
    assert.match(newId(), /^[a-z0-9]{10}$/);
  });
  it('derives object names within the 15-byte interface limit', () => {
    const { bridge, container, network } = objectNames(newId());
    assert.ok(bridge.length <= 15);
    assert.equal(container, network);
  });
});

describe('option parsing', () => {
  it('parses env pairs, keeping "=" in values', () => {
    assert.deepEqual(parseEnvPairs(['A=1', 'B=x=y', 'EMPTY=']), { A: '1', B: 'x=y', EMPTY: '' });
  });
  for (const bad of ['NOEQ', '=v', '1A=2', 'A-B=1']) {
    it(`rejects env "${bad}"`, () => assert.throws(() => parseEnvPairs([bad]), /invalid environment variable/));
  }
  const mem: Array<[string, number]> = [['512m', 512 * 1024 ** 2], ['1g', 1024 ** 3], ['1G', 1024 ** 3], ['7340032', 7340032], ['64MiB', 64 * 1024 ** 2]];
  for (const [s, n] of mem) it(`memory ${s}`, () => assert.equal(parseMemory(s), n));
  for (const bad of ['', 'lots', '-1m', '1m', '12x']) {
    it(`rejects memory "${bad}"`, () => assert.throws(() => parseMemory(bad), /invalid memory limit .* at least 6m/));
  }
  it('parses cpus', () => assert.equal(parseCpus('1.5'), 1.5));
  for (const bad of ['0', '-1', 'x', '1e3', '2000']) {
    it(`rejects cpus "${bad}"`, () => assert.throws(() => parseCpus(bad), /invalid CPU limit/));
  }
  const pids: Array<[string | number | undefined, number]> = [
    [undefined, DEFAULT_PIDS_LIMIT], ['16', 16], [' 256 ', 256], [4096, 4096], ['4194304', 4194304], ['0064', 64],
  ];
  for (const [v, n] of pids) it(`pids limit ${JSON.stringify(v)}`, () => assert.equal(parsePidsLimit(v), n));
  for (const bad of ['', 'x', '0', '-1', '15', '1.5', '1e3', '+64', '0x40', '4194305', '99999999', 'NaN', 64.5, -5, Number.NaN, Infinity]) {
    it(`rejects pids limit ${typeof bad === 'string' ? JSON.stringify(bad) : bad}`, () =>
      assert.throws(() => parsePidsLimit(bad), (e: Error) => e instanceof UsageError && /^invalid --pids-limit ".*": accepted: a whole number of processes from 16 to 4194304/.test(e.message)));
  }
  it('the default pids limit is 1024', () => assert.equal(DEFAULT_PIDS_LIMIT, 1024));
  for (const good of ['sbx/base:bookworm', 'debian', 'localhost:5000/a/b:1.0', 'busybox@sha256:' + 'a'.repeat(64)]) {
    it(`accepts image ${good.slice(0, 30)}`, () => assert.equal(validateImage(good), good));
  }
  for (const bad of ['UPPER', 'a b', 'x:', ':tag']) {
    it(`rejects image "${bad}"`, () => assert.throws(() => validateImage(bad), /invalid image reference/));
  }
});

describe('resolving a sandbox reference', () => {
  const rec = (id: string, name: string, creating = false): SandboxRecord => ({
    id, name, image: 'i', createdAt: '', command: [], env: {}, memory: 0, cpus: 0, desired: 'running', ...(creating ? { creating } : {}),
  });
  const all = [rec('abc1234567', 'web'), rec('abd7654321', 'db'), rec('zzz0000000', 'half', true)];
  it('by name', () => assert.equal(resolveSandbox('db', all).id, 'abd7654321'));
  it('by id', () => assert.equal(resolveSandbox('abc1234567', all).name, 'web'));
  it('by unique prefix', () => assert.equal(resolveSandbox('abc', all).name, 'web'));
  it('ambiguous prefix is a usage error naming the matches', () => assert.throws(() => resolveSandbox('ab', all), /matches 2 sandboxes \(web, db\)/));
  it('unknown is not found', () => assert.throws(() => resolveSandbox('nope', all), NotFoundError));
  it('ignores sandboxes still being created', () => assert.throws(() => resolveSandbox('half', all), NotFoundError));
});

describe('apt sources', () => {
  it('reads deb822 files, skipping security suites', () => {
    const text = `Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n`;
    assert.equal(pickMirror(parseAptSources(text, true), 'bookworm'), 'http://mirror.invalid/debian');
  });
  it('reads one-line sources with options and comments', () => {
    const text = `# comment\ndeb [arch=amd64] http://m.invalid/debian bookworm main\ndeb-src http://x.invalid bookworm main\n`;
    assert.equal(pickMirror(parseAptSources(text, false), 'bookworm'), 'http://m.invalid/debian');
  });
  it('finds nothing for another suite', () => {
    assert.equal(pickMirror(parseAptSources('deb http://m.invalid/debian trixie main', false), 'bookworm'), undefined);
  });
});

describe('container hardening', () => {
  const rec = (pidsLimit?: number): SandboxRecord => ({
    id: 'abc1234567', name: 'h', image: 'i', createdAt: '', command: [], env: {}, memory: 0, cpus: 0, desired: 'running', ...(pidsLimit ? { pidsLimit } : {}),
  });
  it('drops every capability and adds back only the userland set', () => {
    const h = hardening(rec(64));
    assert.deepEqual(h.CapDrop, ['ALL']);
    assert.deepEqual([...h.CapAdd].sort(), ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'NET_BIND_SERVICE', 'SETGID', 'SETUID']);
    assert.deepEqual(h.SecurityOpt, ['no-new-privileges']);
    assert.equal(h.PidsLimit, 64);
  });
  for (const cap of ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'SYS_PTRACE', 'MKNOD', 'AUDIT_WRITE', 'SETFCAP', 'SETPCAP', 'SYS_CHROOT', 'DAC_READ_SEARCH']) {
    it(`never grants ${cap}`, () => assert.ok(!hardening(rec()).CapAdd.includes(cap)));
  }
  it('a record made before pids limits existed gets the default', () => assert.equal(hardening(rec()).PidsLimit, DEFAULT_PIDS_LIMIT));
});
