// sbx's CA and the gateway's certificate from it (src/api/ca.ts): made once per home, also when
// several processes ask at once; the certificate chains to it, names what it was asked for, and is
// made again when the names change.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificateNames, ensureCa, serverCertificate } from '../../src/api/ca.ts';

test('ensureCa: made on first use (key 0600), the same after; four at once agree on one', async () => {
  const home = mkdtempSync(join(tmpdir(), 'sbx-ca-'));
  try {
    const all = await Promise.all([ensureCa(home), ensureCa(home), ensureCa(home), ensureCa(home)]);
    assert.equal(new Set(all.map((c) => c.sha256)).size, 1, 'one CA');
    assert.equal(statSync(join(home, 'tls', 'ca', 'ca-key.pem')).mode & 0o777, 0o600);
    const again = await ensureCa(home);
    assert.equal(again.created, false);
    assert.equal(again.sha256, all[0]!.sha256);
    const ca = new X509Certificate(readFileSync(again.path));
    assert.equal(ca.ca, true);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('serverCertificate: signed by the home\'s CA for *.<domain> and <domain>, kept, made again for other names', async () => {
  const home = mkdtempSync(join(tmpdir(), 'sbx-ca-'));
  try {
    const names = certificateNames('sbx.localhost');
    assert.deepEqual(names, ['*.sbx.localhost', 'sbx.localhost']);
    const first = await serverCertificate(home, names, {});
    const ca = new X509Certificate(readFileSync((await ensureCa(home)).path));
    const cert = new X509Certificate(first.cert);
    assert.ok(cert.verify(ca.publicKey), 'chains to the CA');
    assert.ok(cert.checkHost('8000-web.sbx.localhost'));
    assert.ok(cert.checkHost('sbx.localhost'));
    assert.equal(cert.checkHost('a.b.sbx.localhost'), undefined, 'one label only');
    assert.equal(statSync(first.keyPath).mode & 0o777, 0o600);
    assert.equal((await serverCertificate(home, names, {})).cert, first.cert, 'kept');
    const other = await serverCertificate(home, certificateNames('dev.example.test'), {});
    assert.ok(new X509Certificate(other.cert).checkHost('3000-api.dev.example.test'));
    assert.ok(Date.parse(new X509Certificate(other.cert).validTo) - Date.now() <= 398 * 86_400_000, 'within what browsers accept');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
