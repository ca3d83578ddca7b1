// sbx's own certificate authority, one per SBX_HOME, made on first use: it signs the gateway's
// certificate for `*.<domain>` when the gateway serves HTTPS (SBX_GATEWAY_TLS=1). Its key never
// leaves SBX_HOME/tls (0600); the user trusts ca.pem where they want (sbx ca says how, and never
// installs it anywhere). A pair (certificate and key) is written into a new directory that is
// then renamed into place, so two processes making it at once cannot mix one's key with the
// other's certificate: the second rename fails, and that process uses the first one's.
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RuntimeError, UsageError } from '../core/errors.ts';

export interface CaInfo {
  /** The CA certificate to trust (PEM). */
  path: string;
  /** Made by this call (first use). */
  created: boolean;
  subject: string;
  notAfter: string;
  /** SHA-256 fingerprint, as browsers show it. */
  sha256: string;
}

export interface ServerCertificate {
  cert: string;
  key: string;
  certPath: string;
  keyPath: string;
  names: string[];
  /** Where it came from: sbx's CA, or SBX_TLS_CERT/SBX_TLS_KEY. */
  source: 'sbx-ca' | 'user';
  /** sbx's CA certificate (source sbx-ca). */
  caPath?: string;
}

const CA_DAYS = 3650;
/** Browsers refuse server certificates valid for longer than 398 days. */
const SERVER_DAYS = 397;
/** A server certificate this close to its end is made again at the gateway's start. */
const RENEW_BEFORE_DAYS = 30;
const DAY_MS = 86_400_000;

const tlsDir = (home: string) => join(home, 'tls');
const caDir = (home: string) => join(tlsDir(home), 'ca');

type Forge = typeof import('node-forge');
// node-forge is loaded only when a certificate is made (it is large, and most commands never need it).
async function forge(): Promise<Forge> {
  const mod = (await import('node-forge')) as unknown as { default?: Forge };
  return mod.default ?? (mod as unknown as Forge);
}

function rsaKey(f: Forge) {
  // Node makes the key (native, fast); forge only builds and signs the certificates.
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } });
  return { pem: privateKey, key: f.pki.privateKeyFromPem(privateKey) };
}

/** A new key and a certificate for it, valid from a minute ago (clocks differ) for `days`; unsigned. */
function newCertificate(f: Forge, days: number) {
  const { pem, key } = rsaKey(f);
  const cert = f.pki.createCertificate();
  cert.publicKey = f.pki.setRsaPublicKey(key.n, key.e);
  cert.serialNumber = serial();
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + days * DAY_MS);
  return { pem, key, cert };
}

function serial(): string {
  // Positive, 16 bytes of randomness (RFC 5280: at most 20 octets).
  return `01${randomBytes(15).toString('hex')}`;
}

/** Writes files into a fresh directory, then renames it to `dir`; false when `dir` exists (another process was first). */
function publishPair(dir: string, files: Record<string, { text: string; mode: number }>): boolean {
  const parent = join(dir, '..');
  mkdirSync(parent, { recursive: true, mode: 0o700 });
  const tmp = join(parent, `.new-${randomBytes(6).toString('hex')}`);
  mkdirSync(tmp, { mode: 0o755 });
  try {
    for (const [name, f] of Object.entries(files)) {
      writeFileSync(join(tmp, name), f.text, { mode: f.mode });
      chmodSync(join(tmp, name), f.mode);
    }
    renameSync(tmp, dir);
    return true;
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return false;
    throw err;
  }
}

function describeCa(path: string, created: boolean): CaInfo {
  const cert = new X509Certificate(readFileSync(path));
  return { path, created, subject: cert.subject.replace(/\n/g, ', '), notAfter: new Date(cert.validTo).toISOString(), sha256: cert.fingerprint256 };
}

/** The CA of this home, made on first use. */
export async function ensureCa(home: string): Promise<CaInfo> {
  const path = join(caDir(home), 'ca.pem');
  try {
    return describeCa(path, false);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new RuntimeError(`the sbx CA at ${path} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  const f = await forge();
  const { pem, key, cert } = newCertificate(f, CA_DAYS);
  const name = [
    { name: 'commonName', value: `sbx local CA ${randomBytes(4).toString('hex')}` },
    { name: 'organizationName', value: 'sbx (this machine only)' },
  ];
  cert.setSubject(name);
  cert.setIssuer(name);
  // pathLen 0: it signs server certificates only, never another CA.
  cert.setExtensions([{ name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true }, { name: 'subjectKeyIdentifier' }]);
  cert.sign(key, f.md.sha256.create());
  const created = publishPair(caDir(home), { 'ca.pem': { text: f.pki.certificateToPem(cert), mode: 0o644 }, 'ca-key.pem': { text: pem, mode: 0o600 } });
  return describeCa(path, created);
}

/** Names a certificate for `domain` covers: the domain and one label below it (`<port>-<sandbox>.<domain>`). */
export function certificateNames(domain: string): string[] {
  return [`*.${domain}`, domain];
}

/**
 * The gateway's certificate: SBX_TLS_CERT and SBX_TLS_KEY when both are set (read as given), else
 * one for `names` from this home's CA, made again when the names or the CA changed or when it ends
 * within 30 days.
 */
export async function serverCertificate(home: string, names: string[], env: NodeJS.ProcessEnv = process.env): Promise<ServerCertificate> {
  if (env.SBX_TLS_CERT || env.SBX_TLS_KEY) return userCertificate(env, names);
  const ca = await ensureCa(home);
  const dir = join(tlsDir(home), 'server');
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  try {
    const meta = JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')) as { names: string[]; ca: string };
    const current = new X509Certificate(readFileSync(certPath));
    if (meta.ca === ca.sha256 && meta.names.join(',') === names.join(',') && Date.parse(current.validTo) - Date.now() > RENEW_BEFORE_DAYS * DAY_MS) {
      return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8'), certPath, keyPath, names, source: 'sbx-ca', caPath: ca.path };
    }
  } catch {}
  const f = await forge();
  const caCert = f.pki.certificateFromPem(readFileSync(ca.path, 'utf8'));
  const caKey = f.pki.privateKeyFromPem(readFileSync(join(caDir(home), 'ca-key.pem'), 'utf8'));
  const { pem, cert } = newCertificate(f, SERVER_DAYS);
  cert.setSubject([{ name: 'commonName', value: names[0]! }]);
  cert.setIssuer(caCert.subject.attributes);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: names.map((value) => ({ type: 2, value })) },
    { name: 'authorityKeyIdentifier', keyIdentifier: caCert.generateSubjectKeyIdentifier().getBytes() },
  ]);
  cert.sign(caKey, f.md.sha256.create());
  const text = f.pki.certificateToPem(cert);
  // Replaced whole: the old directory goes first (the gateway that asks is the only writer).
  rmSync(dir, { recursive: true, force: true });
  publishPair(dir, { 'cert.pem': { text, mode: 0o644 }, 'key.pem': { text: pem, mode: 0o600 }, 'meta.json': { text: JSON.stringify({ names, ca: ca.sha256 }), mode: 0o644 } });
  return { cert: readFileSync(certPath, 'utf8'), key: readFileSync(keyPath, 'utf8'), certPath, keyPath, names, source: 'sbx-ca', caPath: ca.path };
}

/** SBX_TLS_CERT and SBX_TLS_KEY: both readable, a certificate and its key, or a usage error naming what is wrong. */
export function checkUserCertificate(env: NodeJS.ProcessEnv): void {
  userCertificate(env, []);
}

function userCertificate(env: NodeJS.ProcessEnv, names: string[]): ServerCertificate {
  const certPath = env.SBX_TLS_CERT;
  const keyPath = env.SBX_TLS_KEY;
  if (!certPath || !keyPath) throw new UsageError('SBX_TLS_CERT and SBX_TLS_KEY go together: set both (a PEM certificate, with its chain, and its PEM key) or neither');
  let cert: string;
  let key: string;
  try {
    cert = readFileSync(certPath, 'utf8');
    key = readFileSync(keyPath, 'utf8');
  } catch (err) {
    throw new UsageError(`SBX_TLS_CERT/SBX_TLS_KEY cannot be read: ${(err as Error).message}`);
  }
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new UsageError(`SBX_TLS_CERT ${certPath} is not a PEM certificate: ${(err as Error).message}`);
  }
  if (!x509.checkPrivateKey(createKeyOrThrow(key, keyPath))) throw new UsageError(`SBX_TLS_KEY ${keyPath} is not the key of SBX_TLS_CERT ${certPath}`);
  return { cert, key, certPath, keyPath, names, source: 'user' };
}

function createKeyOrThrow(pem: string, path: string) {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new UsageError(`SBX_TLS_KEY ${path} is not a PEM private key: ${(err as Error).message}`);
  }
}

/** How to trust the CA, per client (sbx ca prints these; it installs nothing). */
export function trustSteps(path: string): Record<string, string> {
  return {
    system: `sudo cp ${path} /usr/local/share/ca-certificates/sbx-local-ca.crt && sudo update-ca-certificates   # Debian, Ubuntu`,
    chromium: `certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n sbx-local-ca -i ${path}   # Chromium and Chrome on Linux (libnss3-tools)`,
    firefox: `Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import ${path}, or the Certificates.Install policy`,
    node: `NODE_EXTRA_CA_CERTS=${path}`,
    python: `REQUESTS_CA_BUNDLE=${path}   # requests; SSL_CERT_FILE for other clients`,
    curl: `curl --cacert ${path} https://...`,
  };
}
