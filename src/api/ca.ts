// sbx's own certificate authority, one per SBX_HOME and domain, made on first use: it signs the
// gateway's certificate for `*.<domain>` when the gateway serves HTTPS (SBX_GATEWAY_TLS=1). It can
// sign for nothing else: a critical name constraint permits only names under the domain and no IP
// address, so trusting it (even system-wide) trusts nothing outside sbx's URLs; and a domain that
// could be a public suffix (co.uk, github.io) is refused. Its key never leaves SBX_HOME/tls (0600,
// in directories sbx made and owns, checked before every use: no symlink, no other owner, nothing
// group- or world-writable); the user trusts ca.pem where they want (sbx ca says how, and never
// installs it anywhere). A pair (certificate and key) is written into a new directory that is
// then renamed into place, so two processes making it at once cannot mix one's key with the
// other's certificate: the second rename fails, and that process uses the first one's.
import { X509Certificate, createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
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
const caDir = (home: string, domain: string) => join(tlsDir(home), 'ca', domain);

/** Top-level names for local use only (RFC 6761, 6762, 8375; ICANN's .internal): no public suffix below them. */
const LOCAL_TLDS = new Set(['localhost', 'test', 'internal', 'local', 'lan', 'home.arpa', 'invalid', 'example']);

/**
 * Whether sbx's CA may be made for `domain`: a name under a local-only top-level domain, or one of
 * three labels or more (sbx.example.com). A two-label public name may be a public suffix (co.uk,
 * github.io), under which a CA, even a name-constrained one, could sign for other people's sites.
 */
export function caDomainProblem(domain: string): string | undefined {
  const labels = domain.split('.');
  const local = LOCAL_TLDS.has(labels.at(-1)!) || domain.endsWith('.home.arpa');
  if (labels.length >= 3 || (labels.length === 2 && local)) return undefined;
  return `SBX_DOMAIN "${domain}" cannot have sbx's CA: use a name under .localhost, .test or .internal (sbx.localhost), or one of three labels or more (sbx.example.com), since a CA for a name that may be a public suffix (co.uk, github.io) could sign for every site under it; or bring a certificate with SBX_TLS_CERT and SBX_TLS_KEY`;
}

/**
 * A directory of SBX_HOME/tls, made when missing: refused unless it is a real directory (no
 * symlink) of this user that no one else may write, so that no one else can plant a CA or a key
 * in it, or point the removal of an old certificate elsewhere.
 */
function ownedDir(path: string, mode: number): void {
  mkdirSync(path, { recursive: true, mode });
  const st = lstatSync(path);
  const uid = process.getuid?.() ?? st.uid;
  if (!st.isDirectory() || st.isSymbolicLink() || st.uid !== uid || (st.mode & 0o022) !== 0) {
    throw new RuntimeError(`${path} is not a directory of this user that only it may write (a symlink, another owner, or group/world-writable): sbx keeps its CA's key there, so it refuses to use it; remove it, and sbx makes it again`);
  }
  chmodSync(path, mode);
}

/** A key file: a real file of this user that no one else may read. */
function readKey(path: string): string {
  const st = lstatSync(path);
  const uid = process.getuid?.() ?? st.uid;
  if (!st.isFile() || st.uid !== uid || (st.mode & 0o077) !== 0) throw new RuntimeError(`${path} is not a key file of this user that only it may read: sbx refuses to use it; remove it, and sbx makes it again`);
  return readFileSync(path, 'utf8');
}

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
  ownedDir(parent, 0o700);
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

/** NameConstraints (RFC 5280 4.2.1.10), DER: permitted DNS names under `domain`, no IPv4 or IPv6 address. */
function nameConstraints(f: Forge, domain: string): string {
  const { asn1 } = f;
  const seq = (items: ReturnType<typeof asn1.create>[]) => asn1.create(asn1.Class.UNIVERSAL, asn1.Type.SEQUENCE, true, items);
  const tagged = (tag: number, value: string) => asn1.create(asn1.Class.CONTEXT_SPECIFIC, tag, false, value);
  const permitted = asn1.create(asn1.Class.CONTEXT_SPECIFIC, 0, true, [seq([tagged(2, domain)])]);
  // iPAddress with an all-zero address and mask: every IPv4 (8 bytes) and every IPv6 (32 bytes) address.
  const excluded = asn1.create(asn1.Class.CONTEXT_SPECIFIC, 1, true, [seq([tagged(7, '\0'.repeat(8))]), seq([tagged(7, '\0'.repeat(32))])]);
  return asn1.toDer(seq([permitted, excluded])).getBytes();
}

function describeCa(path: string, created: boolean): CaInfo {
  const cert = new X509Certificate(readFileSync(path));
  return { path, created, subject: cert.subject.replace(/\n/g, ', '), notAfter: new Date(cert.validTo).toISOString(), sha256: cert.fingerprint256 };
}

/** The CA's certificate and key as found, checked to belong together; undefined when there is none yet. */
function existingCa(home: string, domain: string): { cert: string; key: string } | undefined {
  const dir = caDir(home, domain);
  let cert: string;
  try {
    cert = readFileSync(join(dir, 'ca.pem'), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new RuntimeError(`the sbx CA at ${dir} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  ownedDir(dir, 0o755);
  const key = readKey(join(dir, 'ca-key.pem'));
  if (!new X509Certificate(cert).checkPrivateKey(createPrivateKey(key))) throw new RuntimeError(`the sbx CA at ${dir}: ca-key.pem is not the key of ca.pem; remove the directory, and sbx makes a new CA`);
  return { cert, key };
}

/** This home's CA for `domain` (name-constrained to it), made on first use. */
export async function ensureCa(home: string, domain: string): Promise<CaInfo> {
  const problem = caDomainProblem(domain);
  if (problem) throw new UsageError(problem);
  ownedDir(tlsDir(home), 0o700);
  const path = join(caDir(home, domain), 'ca.pem');
  if (existingCa(home, domain)) return describeCa(path, false);
  const f = await forge();
  const { pem, key, cert } = newCertificate(f, CA_DAYS);
  const name = [
    { name: 'commonName', value: `sbx local CA ${randomBytes(4).toString('hex')}` },
    { name: 'organizationName', value: 'sbx (this machine only)' },
  ];
  cert.setSubject(name);
  cert.setIssuer(name);
  // pathLen 0: it signs server certificates only, never another CA; and only for names under the domain.
  cert.setExtensions([{ name: 'basicConstraints', cA: true, pathLenConstraint: 0, critical: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true }, { name: 'subjectKeyIdentifier' }, { id: '2.5.29.30', critical: true, value: nameConstraints(f, domain) }]);
  cert.sign(key, f.md.sha256.create());
  ownedDir(join(tlsDir(home), 'ca'), 0o700);
  const created = publishPair(caDir(home, domain), { 'ca.pem': { text: f.pki.certificateToPem(cert), mode: 0o644 }, 'ca-key.pem': { text: pem, mode: 0o600 } });
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
export async function serverCertificate(home: string, domain: string, env: NodeJS.ProcessEnv = process.env): Promise<ServerCertificate> {
  const names = certificateNames(domain);
  if (env.SBX_TLS_CERT || env.SBX_TLS_KEY) return userCertificate(env, names);
  const ca = await ensureCa(home, domain);
  const dir = join(tlsDir(home), 'server');
  const certPath = join(dir, 'cert.pem');
  const keyPath = join(dir, 'key.pem');
  const caCertificate = new X509Certificate(readFileSync(ca.path));
  const kept = keptCertificate(dir, names, caCertificate);
  if (kept) return { ...kept, certPath, keyPath, names, source: 'sbx-ca', caPath: ca.path };
  const f = await forge();
  const caCert = f.pki.certificateFromPem(readFileSync(ca.path, 'utf8'));
  const caKey = f.pki.privateKeyFromPem(readKey(join(caDir(home, domain), 'ca-key.pem')));
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
  // Replaced whole (tls/ is this user's own, checked): the old directory goes first.
  ownedDir(tlsDir(home), 0o700);
  rmSync(dir, { recursive: true, force: true });
  publishPair(dir, { 'cert.pem': { text, mode: 0o644 }, 'key.pem': { text: pem, mode: 0o600 } });
  return { cert: text, key: pem, certPath, keyPath, names, source: 'sbx-ca', caPath: ca.path };
}

/**
 * The certificate made before, when it is still right: issued by this CA, its key with it, every
 * name covered, and more than 30 days left. Anything else (a copy gone wrong, another domain, a
 * new CA) is made again rather than served or crashed on.
 */
function keptCertificate(dir: string, names: string[], ca: X509Certificate): { cert: string; key: string } | undefined {
  try {
    ownedDir(dir, 0o755);
    const cert = readFileSync(join(dir, 'cert.pem'), 'utf8');
    const key = readKey(join(dir, 'key.pem'));
    const x509 = new X509Certificate(cert);
    const right = x509.checkIssued(ca) && x509.verify(ca.publicKey) && x509.checkPrivateKey(createPrivateKey(key)) && names.every((n) => x509.checkHost(n.replace(/^\*\./, 'x.')) !== undefined) && Date.parse(x509.validTo) - Date.now() > RENEW_BEFORE_DAYS * DAY_MS;
    return right ? { cert, key } : undefined;
  } catch {
    return undefined;
  }
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
    cert = readOwnFile(certPath, 'SBX_TLS_CERT', 0o002);
    key = readOwnFile(keyPath, 'SBX_TLS_KEY', 0o006);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`SBX_TLS_CERT/SBX_TLS_KEY cannot be read: ${(err as Error).message}`);
  }
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
    // The chain too, every block of it whole: X509Certificate reads the first only, and nginx
    // refuses a file whose chain was cut (a copy still being written).
    const blocks = cert.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g) ?? [];
    if (blocks.length !== (cert.match(/-----BEGIN /g) ?? []).length) throw new Error('a PEM block is not whole');
    for (const block of blocks.slice(1)) new X509Certificate(block);
  } catch (err) {
    throw new UsageError(`SBX_TLS_CERT ${certPath} is not a PEM certificate: ${(err as Error).message}`);
  }
  if (!x509.checkPrivateKey(createKeyOrThrow(key, keyPath))) throw new UsageError(`SBX_TLS_KEY ${keyPath} is not the key of SBX_TLS_CERT ${certPath}`);
  return { cert, key, certPath, keyPath, names, source: 'user' };
}

/**
 * A certificate or key file of the user's: refused when someone else owns it (not root, not this
 * user) or when its mode has any of `others` (anyone may write it, and for a key read it): then
 * someone else could swap in a pair of theirs, or has the key. Checked and read through one
 * descriptor, so the file read is the file checked; symlinks (certbot's live/) are followed.
 */
function readOwnFile(path: string, name: string, others: number): string {
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    const uid = process.getuid?.() ?? st.uid;
    if (st.uid !== 0 && st.uid !== uid) throw new UsageError(`${name} ${path} belongs to uid ${st.uid}, not to this user or root: sbx refuses it (its owner could swap it); chown it`);
    const loose = st.mode & others;
    if (loose) throw new UsageError(`${name} ${path} may be ${loose & 0o004 ? 'read' : 'written'} by anyone (mode ${(st.mode & 0o777).toString(8)}): sbx refuses it; chmod o-rwx ${path}`);
    return readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
}

function createKeyOrThrow(pem: string, path: string) {
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new UsageError(`SBX_TLS_KEY ${path} is not a PEM private key: ${(err as Error).message}`);
  }
}

/**
 * Keeps, in this home, a copy of the CA certificate that an agent's gateway chains to (its key
 * stays in the agent's volume), so that `sbx ca` names a file on this machine. Only a CA that sbx
 * itself would make for `domain` is kept: one certificate, no key beside it, self-signed, pathLen
 * 0, and the critical name constraint to `domain` (no IP address). An agent (or an engine's host)
 * that sent anything else could otherwise have the user trust a CA for every site. The file is
 * replaced whole.
 */
export async function keepCaCopy(home: string, name: string, pem: string, created: boolean, domain: string): Promise<CaInfo> {
  const problem = await agentCaProblem(pem, domain);
  if (problem) throw new RuntimeError(`the sbx agent's CA certificate is not one sbx makes for ${domain} (${problem}): not kept; do not trust it`);
  ownedDir(tlsDir(home), 0o700);
  const dir = join(tlsDir(home), 'agent-ca');
  ownedDir(dir, 0o700);
  const path = join(dir, `${name}.pem`);
  const tmp = `${path}.${randomBytes(6).toString('hex')}`;
  try {
    writeFileSync(tmp, pem, { mode: 0o644 });
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return describeCa(path, created);
}

function selfSigned(cert: ReturnType<Forge['pki']['certificateFromPem']>): boolean {
  try {
    return cert.isIssuer(cert) && cert.verify(cert);
  } catch {
    return false; // forge's verify throws for a certificate another one issued
  }
}

/** Why `pem` is not a CA certificate that ensureCa would make for `domain`, or undefined. */
async function agentCaProblem(pem: string, domain: string): Promise<string | undefined> {
  const blocks = pem.match(/-----BEGIN [A-Z0-9 ]+-----/g) ?? [];
  if (blocks.length !== 1 || blocks[0] !== '-----BEGIN CERTIFICATE-----') return 'not one certificate alone';
  const f = await forge();
  let cert: ReturnType<Forge['pki']['certificateFromPem']>;
  try {
    cert = f.pki.certificateFromPem(pem);
  } catch (err) {
    return `unreadable: ${(err as Error).message}`;
  }
  if (!selfSigned(cert)) return 'not self-signed';
  const basic = cert.getExtension('basicConstraints') as { cA?: boolean; pathLenConstraint?: number; critical?: boolean } | null;
  if (!basic?.cA || basic.pathLenConstraint !== 0 || !basic.critical) return 'not a CA that signs server certificates only (pathLen 0)';
  const constraint = cert.getExtension({ id: '2.5.29.30' } as unknown as string) as { critical?: boolean; value?: string } | null;
  if (!constraint?.critical || constraint.value !== nameConstraints(f, domain)) return `not limited to names under ${domain}`;
  return undefined;
}

/** How to trust the CA, per client (sbx ca prints these; it installs nothing). */
export function trustSteps(path: string): Record<string, string> {
  // One program first; the whole system last (the CA can sign only for SBX_DOMAIN, but still).
  return {
    curl: `curl --cacert ${path} https://...`,
    node: `NODE_EXTRA_CA_CERTS=${path}`,
    python: `REQUESTS_CA_BUNDLE=${path}   # requests; SSL_CERT_FILE for other clients`,
    chromium: `certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n sbx-local-ca -i ${path}   # Chromium and Chrome on Linux (libnss3-tools)`,
    firefox: `Settings > Privacy & Security > Certificates > View Certificates > Authorities > Import ${path}, or the Certificates.Install policy`,
    system: `sudo cp ${path} /usr/local/share/ca-certificates/sbx-local-ca.crt && sudo update-ca-certificates   # Debian, Ubuntu`,
  };
}
