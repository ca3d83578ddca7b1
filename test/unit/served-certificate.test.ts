// The checked copies of the served certificate in a gateway's run directory: named per process, so
// that two gateways of one home (both starting at once) never remove each other's.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { removeServedCopies, ServedCertificate, servedCertificateDir } from '../../src/gateway/served-certificate.ts';

const scratch = mkdtempSync(join(tmpdir(), 'sbx-served-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const pair = (n: string) => ({ cert: `cert ${n}`, key: `key ${n}` });
let dirs = 0;
const runDir = () => join(scratch, `run-${dirs++}`);
const files = (run: string) => readdirSync(servedCertificateDir(run)).sort();

describe('served certificate copies', () => {
  it('are named by pid and a counter; keepOnly removes this gateway\'s older pairs', () => {
    const run = runDir();
    const s = new ServedCertificate(run, 100, () => true);
    s.publish(pair('a'));
    const b = s.publish(pair('b'));
    assert.deepEqual(b, { cert: join(servedCertificateDir(run), 'cert-100-2.pem'), key: join(servedCertificateDir(run), 'key-100-2.pem') });
    s.keepOnly(b);
    assert.deepEqual(files(run), ['cert-100-2.pem', 'key-100-2.pem']);
  });

  it('two gateways of one home: neither keepOnly nor clear touches the other\'s live copies', () => {
    const run = runDir();
    const alive = new Set([100, 200]);
    const one = new ServedCertificate(run, 100, (pid) => alive.has(pid));
    const two = new ServedCertificate(run, 200, (pid) => alive.has(pid));
    const a = one.publish(pair('one'));
    const b = two.publish(pair('two'));
    one.keepOnly(a);
    two.keepOnly(b);
    assert.deepEqual(files(run), ['cert-100-1.pem', 'cert-200-1.pem', 'key-100-1.pem', 'key-200-1.pem']);
    two.clear(); // the loser's start failed
    assert.deepEqual(files(run), ['cert-100-1.pem', 'key-100-1.pem']);
    one.clear(); // the winner stops: nothing left, not even the directory
    assert.equal(existsSync(servedCertificateDir(run)), false);
  });

  it('keepOnly removes the copies of gateways no longer running and files of the older names (cert-1.pem); a live one\'s copy being written (.tmp) and files not its own stay', () => {
    const run = runDir();
    mkdirSync(servedCertificateDir(run), { recursive: true });
    for (const name of ['cert-1.pem', 'key-1.pem', 'cert-300-4.pem', 'key-300-4.pem', 'key-200-1.pem.200.tmp', 'notes.txt']) writeFileSync(join(servedCertificateDir(run), name), 'old');
    const s = new ServedCertificate(run, 100, (pid) => pid === 100 || pid === 200);
    s.keepOnly(s.publish(pair('new')));
    assert.deepEqual(files(run), ['cert-100-1.pem', 'key-100-1.pem', 'key-200-1.pem.200.tmp', 'notes.txt']);
  });

  it('clear also takes the copies of gateways that died without removing theirs; a live one\'s stay', () => {
    const run = runDir();
    const live = new ServedCertificate(run, 200, () => true);
    live.publish(pair('live'));
    new ServedCertificate(run, 300, () => true).publish(pair('dead'));
    const s = new ServedCertificate(run, 100, (pid) => pid !== 300);
    s.publish(pair('mine'));
    s.clear();
    assert.deepEqual(files(run), ['cert-200-1.pem', 'key-200-1.pem']);
  });

  it("gateway stop after a kill: the killed one's copies go (removeServedCopies), another live one's stay; publish makes the directory again", () => {
    const run = runDir();
    new ServedCertificate(run, 100, () => true).publish(pair('killed'));
    const other = new ServedCertificate(run, 200, () => true);
    other.publish(pair('other'));
    removeServedCopies(run, (pid) => pid === 100);
    assert.deepEqual(files(run), ['cert-200-1.pem', 'key-200-1.pem']);
    removeServedCopies(run, (pid) => pid === 200);
    assert.equal(existsSync(servedCertificateDir(run)), false);
    other.publish(pair('again'));
    assert.deepEqual(files(run), ['cert-200-2.pem', 'key-200-2.pem']);
  });
});
