// nginx reads its certificate files at every reload (each route change too), not only when the
// gateway means it to: it is given copies the gateway checked, in its own run directory, under a
// new name for each pair. Files replaced or half written elsewhere (SBX_TLS_CERT's, renewed by
// certbot; sbx's own, being made again) then never reach nginx unchecked. The names carry the
// gateway's pid, so that one gateway never removes what another of the home still serves.
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

/** A copy: cert-<pid>-<n>.pem or key-<pid>-<n>.pem, or one being written (writeAtomic's .<pid>.tmp). */
const COPY = /^(?:cert|key)-(\d+)-\d+\.pem(?:\.\d+\.tmp)?$/;
/** A copy named as before pids were in the names (cert-<n>.pem): nobody's now. */
const OLD_COPY = /^(?:cert|key)-\d+\.pem(?:\.\d+\.tmp)?$/;

/**
 * Removes the copies in `runDir` whose owner `gone(pid)` says is gone, and those of the old names,
 * but not the files in `keep`; other files are left alone. The directory goes too when that empties it.
 */
export function removeServedCopies(runDir: string, gone: (pid: number) => boolean, keep: string[] = []): void {
  const dir = servedCertificateDir(runDir);
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = COPY.exec(name);
    const path = join(dir, name);
    if (!keep.includes(path) && ((m && gone(Number(m[1]))) || OLD_COPY.test(name))) rmSync(path, { force: true });
  }
  try {
    rmdirSync(dir);
  } catch {
    // not empty: another gateway's copies (a publish makes the directory again if it raced this)
  }
}

export class ServedCertificate {
  readonly #runDir: string;
  readonly #dir: string;
  readonly #pid: number;
  readonly #alive: (pid: number) => boolean;
  #n = 0;

  constructor(runDir: string, pid = process.pid, isAlive = alive) {
    this.#runDir = runDir;
    this.#dir = servedCertificateDir(runDir);
    this.#pid = pid;
    this.#alive = isAlive;
  }

  /** Writes this pair under new names: the paths to give nginx. */
  publish(pair: { cert: string; key: string }): CertificateFiles {
    this.#n++;
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
    const files = { cert: join(this.#dir, `cert-${this.#pid}-${this.#n}.pem`), key: join(this.#dir, `key-${this.#pid}-${this.#n}.pem`) };
    writeAtomic(files.key, pair.key);
    writeAtomic(files.cert, pair.cert);
    return files;
  }

  /**
   * This gateway stops, or its start failed: its key is not left behind in its run directory, nor
   * those of gateways of this home that died without removing theirs.
   */
  clear(): void {
    removeServedCopies(this.#runDir, this.#mineOrDead);
  }

  /** Removes every other pair of this gateway, and those of gateways no longer running (or of older names). */
  keepOnly(files: CertificateFiles): void {
    removeServedCopies(this.#runDir, this.#mineOrDead, [files.cert, files.key]);
  }

  readonly #mineOrDead = (pid: number) => pid === this.#pid || !this.#alive(pid);
}
