// TLS material for a test engine, made with openssl: a CA, a server certificate for one IP
// address (dockerd --tlscert/--tlskey) and a client certificate, the client's laid out as
// DOCKER_CERT_PATH wants it (ca.pem, cert.pem, key.pem). EC keys: quick to make. Valid one day.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TlsCerts {
  /** The CA certificate (what dockerd --tlscacert trusts for clients). */
  ca: string;
  serverCert: string;
  serverKey: string;
  /** ca.pem, cert.pem, key.pem: a DOCKER_CERT_PATH. */
  clientDir: string;
}

const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
const newKey = (out: string) => openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', out);

/** Signs a certificate for `subject` with the CA of `dir`, with the given extensions. */
function sign(dir: string, name: string, subject: string, extensions: string): void {
  newKey(join(dir, `${name}-key.pem`));
  openssl('req', '-new', '-key', join(dir, `${name}-key.pem`), '-subj', subject, '-out', join(dir, `${name}.csr`));
  writeFileSync(join(dir, `${name}.ext`), extensions);
  openssl(
    'x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', join(dir, 'ca.pem'), '-CAkey', join(dir, 'ca-key.pem'),
    '-CAcreateserial', '-days', '1', '-extfile', join(dir, `${name}.ext`), '-out', join(dir, `${name}-cert.pem`),
  );
}

/** Makes the CA and both certificates in `dir` (created); the server's is for `ip`. */
export function makeTlsCerts(dir: string, ip: string): TlsCerts {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  newKey(join(dir, 'ca-key.pem'));
  openssl('req', '-new', '-x509', '-key', join(dir, 'ca-key.pem'), '-subj', '/CN=sbx test CA', '-days', '1', '-out', join(dir, 'ca.pem'));
  sign(dir, 'server', '/CN=sbx test engine', `subjectAltName=IP:${ip}\nextendedKeyUsage=serverAuth\n`);
  sign(dir, 'client', '/CN=sbx test client', 'extendedKeyUsage=clientAuth\n');
  const clientDir = join(dir, 'client');
  mkdirSync(clientDir, { mode: 0o700 });
  copyFileSync(join(dir, 'ca.pem'), join(clientDir, 'ca.pem'));
  copyFileSync(join(dir, 'client-cert.pem'), join(clientDir, 'cert.pem'));
  copyFileSync(join(dir, 'client-key.pem'), join(clientDir, 'key.pem'));
  return { ca: join(dir, 'ca.pem'), serverCert: join(dir, 'server-cert.pem'), serverKey: join(dir, 'server-key.pem'), clientDir };
}
