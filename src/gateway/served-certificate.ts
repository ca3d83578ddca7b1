// nginx reads its certificate files at every reload (each route change too), not only when the
// gateway means it to: it is given copies the gateway checked, in its own run directory, under a
// new name for each pair. Files replaced or half written elsewhere (SBX_TLS_CERT's, renewed by
// certbot; sbx's own, being made again) then never reach nginx unchecked. The names carry the
// gateway's pid, so that two gateways of one home starting at once never touch each other's copies.
import { mkdirSync, readdirSync, rmdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { alive } from './state.ts';
import { writeAtomic } from './write-atomic.ts';

export interface CertificateFiles {
  cert: string;
  key: string;
}

/** Where a gateway with this run directory keeps the copies it serves. */
export const servedCertificateDir = (runDir: string) => join(runDir, 'tls');

/** A copy's name: cert-<pid>-<n>.pem or key-<pid>-<n>.pem. */
const COPY = /^(?:cert|key)-(\d+)-\d+\.pem$/;

export class ServedCertificate {
  readonly #dir: string;
  readonly #pid: number;
  readonly #alive: (pid: number) => boolean;
  #n = 0;

  constructor(runDir: string, pid = process.pid, isAlive = alive) {
    this.#dir = servedCertificateDir(runDir);
    this.#pid = pid;
    this.#alive = isAlive;
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
  }

  /** Writes this pair under new names: the paths to give nginx. */
  publish(pair: { cert: string; key: string }): CertificateFiles {
    this.#n++;
    const files = { cert: join(this.#dir, `cert-${this.#pid}-${this.#n}.pem`), key: join(this.#dir, `key-${this.#pid}-${this.#n}.pem`) };
    writeAtomic(files.key, pair.key);
    writeAtomic(files.cert, pair.cert);
    return files;
  }

  /**
   * Removes this gateway's copies (it stops, or its start failed: its key is not left behind in its
   * run directory), and the directory when no other gateway's are there.
   */
  clear(): void {
    this.#remove((pid) => pid === this.#pid);
    try {
      rmdirSync(this.#dir);
    } catch {
      // another gateway's copies are still there
    }
  }

  /** Removes every other pair of this gateway, and those of gateways no longer running (or of older names). */
  keepOnly(files: CertificateFiles): void {
    this.#remove((pid, path) => path !== files.cert && path !== files.key && (pid === this.#pid || pid === undefined || !this.#alive(pid)));
  }

  #remove(which: (pid: number | undefined, path: string) => boolean): void {
    let names: string[];
    try {
      names = readdirSync(this.#dir);
    } catch {
      return;
    }
    for (const name of names) {
      const m = COPY.exec(name);
      const path = join(this.#dir, name);
      if (which(m ? Number(m[1]) : undefined, path)) rmSync(path, { force: true });
    }
  }
}
