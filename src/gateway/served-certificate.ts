// nginx reads its certificate files at every reload (each route change too), not only when the
// gateway means it to: it is given copies the gateway checked, in its own run directory, under a
// new name for each pair. Files replaced or half written elsewhere (SBX_TLS_CERT's, renewed by
// certbot; sbx's own, being made again) then never reach nginx unchecked.
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeAtomic } from './write-atomic.ts';

export interface CertificateFiles {
  cert: string;
  key: string;
}

/** Where a gateway with this run directory keeps the copies it serves. */
export const servedCertificateDir = (runDir: string) => join(runDir, 'tls');

export class ServedCertificate {
  readonly #dir: string;
  #n = 0;

  constructor(runDir: string) {
    this.#dir = servedCertificateDir(runDir);
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
  }

  /** Writes this pair under new names: the paths to give nginx. */
  publish(pair: { cert: string; key: string }): CertificateFiles {
    this.#n++;
    const files = { cert: join(this.#dir, `cert-${this.#n}.pem`), key: join(this.#dir, `key-${this.#n}.pem`) };
    writeAtomic(files.key, pair.key);
    writeAtomic(files.cert, pair.cert);
    return files;
  }

  /** Removes every copy: the gateway stops, and its key is not left behind in its run directory. */
  clear(): void {
    rmSync(this.#dir, { recursive: true, force: true });
  }

  /** Removes every other pair (older ones, and those of an earlier run). */
  keepOnly(files: CertificateFiles): void {
    for (const name of readdirSync(this.#dir)) {
      const path = join(this.#dir, name);
      if (path !== files.cert && path !== files.key) rmSync(path, { force: true });
    }
  }
}
