// sbx's CA and the gateway's certificate from it (src/api/ca.ts): made once per home and domain,
// also when several processes ask at once; name-constrained to the domain (openssl refuses what it
// would sign for another name); refused for a domain that may be a public suffix; and never taken
// from a directory someone else could have planted.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import forge from 'node-forge';
import { caDomainProblem, certificateNames, ensureCa, keepCaCopy, serverCertificate } from '../../src/api/ca.ts';
import { userCertificate } from '../user-cert.ts';

const made: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-ca-'));
  made.push(dir);
  return dir;
};
after(() => {
  for (const dir of made) rmSync(dir, { recursive: true, force: true });
});

test('ensureCa: made on first use (key 0600), the same after; four at once agree on one', async () => {
  const home = scratch();
  try {
    const all = await Promise.all([1, 2, 3, 4].map(() => ensureCa(home, 'sbx.localhost')));
    assert.equal(new Set(all.map((c) => c.sha256)).size, 1, 'one CA');
    assert.equal(statSync(join(home, 'tls', 'ca', 'sbx.localhost', 'ca-key.pem')).mode & 0o777, 0o600);
    assert.equal(statSync(join(home, 'tls')).mode & 0o777, 0o700);
    const again = await ensureCa(home, 'sbx.localhost');
    assert.equal(again.created, false);
    assert.equal(again.sha256, all[0]!.sha256);
    assert.equal(new X509Certificate(readFileSync(again.path)).ca, true);
    assert.notEqual((await ensureCa(home, 'dev.test')).sha256, again.sha256, 'one CA per domain');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('serverCertificate: signed by the CA for *.<domain> and <domain>, kept, made again for another domain or a broken copy', async () => {
  const home = scratch();
  try {
    assert.deepEqual(certificateNames('sbx.localhost'), ['*.sbx.localhost', 'sbx.localhost']);
    const first = await serverCertificate(home, 'sbx.localhost', {});
    const ca = new X509Certificate(readFileSync((await ensureCa(home, 'sbx.localhost')).path));
    const cert = new X509Certificate(first.cert);
    assert.ok(cert.verify(ca.publicKey), 'chains to the CA');
    assert.ok(cert.checkHost('8000-web.sbx.localhost'));
    assert.ok(cert.checkHost('sbx.localhost'));
    assert.equal(cert.checkHost('a.b.sbx.localhost'), undefined, 'one label only');
    assert.equal(statSync(first.keyPath).mode & 0o777, 0o600);
    assert.equal((await serverCertificate(home, 'sbx.localhost', {})).cert, first.cert, 'kept');
    writeFileSync(first.keyPath, (await serverCertificate(scratch(), 'sbx.localhost', {})).key, { mode: 0o600 });
    const repaired = await serverCertificate(home, 'sbx.localhost', {});
    assert.notEqual(repaired.cert, first.cert, 'a key that is not the certificate\'s: made again, not served');
    const other = await serverCertificate(home, 'dev.example.test', {});
    assert.ok(new X509Certificate(other.cert).checkHost('3000-api.dev.example.test'));
    assert.ok(Date.parse(new X509Certificate(other.cert).validTo) - Date.now() <= 398 * 86_400_000, 'within what browsers accept');
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('attack: the CA signs a certificate for another name (google.com, an IP address): openssl refuses it (name constraints); control: its own name passes', async () => {
  const home = scratch();
  try {
    const info = await ensureCa(home, 'sbx.localhost');
    const caCert = forge.pki.certificateFromPem(readFileSync(info.path, 'utf8'));
    const caKey = forge.pki.privateKeyFromPem(readFileSync(join(home, 'tls', 'ca', 'sbx.localhost', 'ca-key.pem'), 'utf8'));
    const issue = (altNames: Array<{ type: number; value?: string; ip?: string }>) => {
      const keys = forge.pki.rsa.generateKeyPair(1024);
      const c = forge.pki.createCertificate();
      c.publicKey = keys.publicKey;
      c.serialNumber = '05';
      c.validity.notBefore = new Date(Date.now() - 60_000);
      c.validity.notAfter = new Date(Date.now() + 86_400_000);
      c.setSubject([{ name: 'commonName', value: 'x' }]);
      c.setIssuer(caCert.subject.attributes);
      c.setExtensions([{ name: 'subjectAltName', altNames }, { name: 'extKeyUsage', serverAuth: true }]);
      c.sign(caKey, forge.md.sha256.create());
      const path = join(home, `leaf-${Math.random()}.pem`);
      writeFileSync(path, forge.pki.certificateToPem(c));
      return spawnSync('openssl', ['verify', '-CAfile', info.path, path], { encoding: 'utf8' });
    };
    assert.equal(issue([{ type: 2, value: '8000-web.sbx.localhost' }]).status, 0, 'control');
    const google = issue([{ type: 2, value: 'google.com' }]);
    assert.notEqual(google.status, 0);
    assert.match(google.stdout + google.stderr, /permitted subtree violation/);
    const ip = issue([{ type: 7, ip: '192.0.2.10' }]);
    assert.notEqual(ip.status, 0);
    assert.match(ip.stdout + ip.stderr, /excluded subtree violation|subtree violation/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('a domain that may be a public suffix gets no CA (a usage error); local and longer names do', async () => {
  for (const d of ['co.uk', 'github.io', 'example.com', 'localhost', 'com']) assert.match(caDomainProblem(d) ?? '', /cannot have sbx's CA/, d);
  for (const d of ['sbx.localhost', 'dev.test', 'sbx.internal', 'box.home.arpa', 'sbx.example.com', 'a.github.io']) assert.equal(caDomainProblem(d), undefined, d);
  await assert.rejects(ensureCa(scratch(), 'co.uk'), /SBX_DOMAIN "co\.uk" cannot have sbx's CA/);
});

test('attack: a planted tls directory (a symlink elsewhere, or writable by others) is refused, and nothing outside the home is touched', async () => {
  const home = scratch();
  const victim = scratch();
  try {
    mkdirSync(join(victim, 'server'), { recursive: true });
    writeFileSync(join(victim, 'server', 'precious'), 'keep me');
    symlinkSync(victim, join(home, 'tls'));
    await assert.rejects(serverCertificate(home, 'sbx.localhost', {}), /is not a directory of this user that only it may write/);
    assert.equal(readFileSync(join(victim, 'server', 'precious'), 'utf8'), 'keep me');
    rmSync(join(home, 'tls'));
    mkdirSync(join(home, 'tls', 'ca', 'sbx.localhost'), { recursive: true });
    chmodSync(join(home, 'tls', 'ca', 'sbx.localhost'), 0o777);
    writeFileSync(join(home, 'tls', 'ca', 'sbx.localhost', 'ca.pem'), readFileSync((await ensureCa(scratch(), 'sbx.localhost')).path));
    await assert.rejects(ensureCa(home, 'sbx.localhost'), /is not a directory of this user|not a key file/);
  } finally {
    rmSync(home, { recursive: true, force: true });
    rmSync(victim, { recursive: true, force: true });
  }
});

test('SBX_TLS_CERT with a chain cut short (a copy still being written) is refused, though its first block is whole; the whole chain is taken', async () => {
  const home = scratch();
  const mine = await serverCertificate(home, 'sbx.localhost', {});
  const caPem = readFileSync(mine.caPath!, 'utf8');
  const dir = scratch();
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  writeFileSync(keyPath, mine.key, { mode: 0o600 });
  writeFileSync(certPath, mine.cert + caPem);
  const whole = await serverCertificate(home, 'sbx.localhost', { SBX_TLS_CERT: certPath, SBX_TLS_KEY: keyPath });
  assert.equal(whole.cert, mine.cert + caPem, 'control: leaf and chain');
  writeFileSync(certPath, mine.cert + caPem.slice(0, Math.floor(caPem.length / 2)));
  await assert.rejects(serverCertificate(home, 'sbx.localhost', { SBX_TLS_CERT: certPath, SBX_TLS_KEY: keyPath }), /is not a PEM certificate: a PEM block is not whole/);
});

test("keepCaCopy (an agent's CA, kept on the client's side): only a CA sbx makes for the domain is written, whole; a key, a server certificate, two blocks, junk, a CA without the name constraint or for another domain are refused and write nothing", async () => {
  const agentHome = scratch();
  const home = scratch();
  const ca = await ensureCa(agentHome, 'sbx.localhost');
  const pem = readFileSync(ca.path, 'utf8');
  const kept = await keepCaCopy(home, 'sbx-agent-abc', pem, true, 'sbx.localhost');
  assert.equal(kept.path, join(home, 'tls', 'agent-ca', 'sbx-agent-abc.pem'));
  assert.deepEqual([kept.sha256, kept.created], [ca.sha256, true]);
  assert.equal(readFileSync(kept.path, 'utf8'), pem);
  const server = await serverCertificate(agentHome, 'sbx.localhost', {});
  const key = readFileSync(join(agentHome, 'tls', 'ca', 'sbx.localhost', 'ca-key.pem'), 'utf8');
  const otherDomain = readFileSync((await ensureCa(agentHome, 'dev.test')).path, 'utf8');
  const unconstrained = readFileSync(userCertificate(scratch(), new Date(Date.now() - 86_400_000), new Date(Date.now() + 86_400_000)).caPath, 'utf8');
  for (const [what, bad, why] of [
    ['a key beside it', pem + key, /not one certificate alone/],
    ['a key', key, /not one certificate alone/],
    ['two certificates', pem + pem, /not one certificate alone/],
    ['junk', 'hello', /not one certificate alone/],
    ['a server certificate', server.cert, /not self-signed/],
    ['a CA that may sign for any name', unconstrained, /not a CA that signs server certificates only|not limited to names under sbx\.localhost/],
    ['a CA for another domain', otherDomain, /not limited to names under sbx\.localhost/],
  ] as const) {
    await assert.rejects(keepCaCopy(home, 'sbx-agent-xyz', bad, false, 'sbx.localhost'), why, what);
  }
  assert.deepEqual(readdirSync(join(home, 'tls', 'agent-ca')), ['sbx-agent-abc.pem'], 'nothing else written, no temporary file left');
  assert.equal(readFileSync(kept.path, 'utf8'), pem, 'the good copy stays');
});

test('SBX_TLS_KEY that anyone may read or write, or SBX_TLS_CERT that anyone may write, or either owned by another user, is refused with the fix to run; 0600, 0640 (ssl-cert) and group-writable (a user-private group) files are taken', async () => {
  const home = scratch();
  const mine = await serverCertificate(home, 'sbx.localhost', {});
  const dir = scratch();
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  writeFileSync(keyPath, mine.key, { mode: 0o600 });
  writeFileSync(certPath, mine.cert, { mode: 0o644 });
  const env = { SBX_TLS_CERT: certPath, SBX_TLS_KEY: keyPath };
  const cases = [
    [keyPath, 0o644, /SBX_TLS_KEY \S+ may be read by anyone \(mode 644\): sbx refuses it; chmod o-rwx /],
    [keyPath, 0o602, /SBX_TLS_KEY \S+ may be written by anyone \(mode 602\)/],
    [certPath, 0o646, /SBX_TLS_CERT \S+ may be written by anyone \(mode 646\): sbx refuses it; chmod o-rwx /],
  ] as const;
  for (const [path, mode, why] of cases) {
    chmodSync(path, mode);
    await assert.rejects(serverCertificate(home, 'sbx.localhost', env), why);
    chmodSync(path, path === keyPath ? 0o600 : 0o644);
  }
  for (const [keyMode, certMode] of [[0o600, 0o644], [0o640, 0o644], [0o660, 0o664]]) {
    chmodSync(keyPath, keyMode);
    chmodSync(certPath, certMode);
    assert.equal((await serverCertificate(home, 'sbx.localhost', env)).source, 'user');
  }
  if (process.getuid?.() === 0) {
    chownSync(keyPath, 65534, 65534);
    await assert.rejects(serverCertificate(home, 'sbx.localhost', env), /SBX_TLS_KEY \S+ belongs to uid 65534, not to this user or root/);
  }
});
