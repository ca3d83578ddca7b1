// `port expose --domain` reads the certificate an HTTPS gateway serves, from another process, while
// the gateway may swap it (a renewal: new copy, gateway.json names it, old copy removed).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readServedCertificate } from '../../src/api/served-certificate-read.ts';

const enoent = (path: string) => Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), { code: 'ENOENT' });

describe('reading the served certificate', () => {
  it('the copy gateway.json names', () => {
    const got = readServedCertificate(() => ({ tlsCert: '/run/tls/cert-1.pem' }), (p) => Buffer.from(`pem of ${p}`));
    assert.deepEqual(got, { path: '/run/tls/cert-1.pem', pem: Buffer.from('pem of /run/tls/cert-1.pem') });
  });

  it('a swap between reading gateway.json and the copy: gateway.json is read again, and the new copy is used', () => {
    const states = ['/run/tls/cert-1.pem', '/run/tls/cert-2.pem'];
    let reads = 0;
    const got = readServedCertificate(
      () => ({ tlsCert: states[Math.min(reads++, 1)] }),
      (p) => {
        if (p.endsWith('cert-1.pem')) throw enoent(p); // removed by the swap
        return Buffer.from('new');
      },
    );
    assert.deepEqual(got, { path: '/run/tls/cert-2.pem', pem: Buffer.from('new') });
    assert.equal(reads, 2);
  });

  it('a copy that stays missing: the read error, after a few more reads of gateway.json', () => {
    let reads = 0;
    assert.throws(() => readServedCertificate(() => (reads++, { tlsCert: '/gone.pem' }), (p) => { throw enoent(p); }), /ENOENT/);
    assert.equal(reads, 4);
  });

  it('other errors are not retried; no certificate named: undefined', () => {
    let reads = 0;
    assert.throws(() => readServedCertificate(() => (reads++, { tlsCert: '/x.pem' }), () => { throw Object.assign(new Error('EACCES'), { code: 'EACCES' }); }), /EACCES/);
    assert.equal(reads, 1);
    assert.equal(readServedCertificate(() => ({})), undefined);
    assert.equal(readServedCertificate(() => undefined), undefined);
  });
});
