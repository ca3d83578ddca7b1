// A certificate of the user's own (SBX_TLS_CERT, SBX_TLS_KEY) for the HTTPS tests, and its CA.
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import forge from 'node-forge';

/**
 * A certificate for `names` (default *.sbx.localhost) signed by a CA of the test's own, valid from
 * `from` to `to`, written into a new directory under `scratch`.
 */
export function userCertificate(scratch: string, from: Date, to: Date, names = ['*.sbx.localhost']): { caPath: string; cert: string; key: string } {
  const pair = () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
    return { pem: privateKey, key: forge.pki.privateKeyFromPem(privateKey) };
  };
  const caKey = pair();
  const caCert = forge.pki.createCertificate();
  caCert.publicKey = forge.pki.setRsaPublicKey(caKey.key.n, caKey.key.e);
  caCert.serialNumber = '01';
  caCert.validity.notBefore = new Date(Date.now() - 86_400_000 * 30);
  caCert.validity.notAfter = new Date(Date.now() + 86_400_000 * 30);
  const caName = [{ name: 'commonName', value: 'sbx test user CA' }];
  caCert.setSubject(caName);
  caCert.setIssuer(caName);
  caCert.setExtensions([{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, critical: true }]);
  caCert.sign(caKey.key, forge.md.sha256.create());
  const leafKey = pair();
  const leaf = forge.pki.createCertificate();
  leaf.publicKey = forge.pki.setRsaPublicKey(leafKey.key.n, leafKey.key.e);
  leaf.serialNumber = '02';
  leaf.validity.notBefore = from;
  leaf.validity.notAfter = to;
  leaf.setSubject([{ name: 'commonName', value: names[0]! }]);
  leaf.setIssuer(caName);
  leaf.setExtensions([{ name: 'subjectAltName', altNames: names.map((value) => ({ type: 2, value })) }, { name: 'extKeyUsage', serverAuth: true }]);
  leaf.sign(caKey.key, forge.md.sha256.create());
  const dir = mkdtempSync(join(scratch, 'user-'));
  const caPath = join(dir, 'ca.pem');
  writeFileSync(caPath, forge.pki.certificateToPem(caCert));
  writeFileSync(join(dir, 'cert.pem'), forge.pki.certificateToPem(leaf));
  writeFileSync(join(dir, 'key.pem'), leafKey.pem, { mode: 0o600 });
  return { caPath, cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') };
}
