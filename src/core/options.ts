// Parsing and validation of user-supplied values (pure). Each error names the bad value and
// what is accepted.
import { UsageError } from './errors.ts';

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

export function parseEnvPairs(pairs: readonly string[] = []): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf('=');
    const key = eq < 0 ? pair : pair.slice(0, eq);
    if (eq < 0 || !ENV_KEY.test(key)) {
      throw new UsageError(`invalid environment variable "${pair}": use KEY=VALUE with KEY matching [A-Za-z_][A-Za-z0-9_]*`);
    }
    env[key] = pair.slice(eq + 1);
  }
  return env;
}

/** Environment given as KEY=VALUE strings or as an object. */
export function toEnv(env: readonly string[] | Record<string, string> | undefined): Record<string, string> {
  return Array.isArray(env) ? parseEnvPairs(env) : { ...(env as Record<string, string> | undefined) };
}

const MEMORY_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };
/** Docker accepts no less than 6 MiB for a container's memory limit. */
const MIN_MEMORY = 6 * 1024 * 1024;

/** "512m" -> bytes. Accepts a number with an optional unit b, k, m or g (case-insensitive). */
export function parseMemory(value: string | number | undefined): number {
  if (value === undefined) return 0;
  if (typeof value === 'number') value = String(value);
  const m = /^(\d+(?:\.\d+)?)\s*([bkmg]?)i?b?$/i.exec(value.trim());
  const bytes = m ? Math.floor(Number(m[1]) * MEMORY_UNITS[m[2]!.toLowerCase()]!) : NaN;
  if (!Number.isFinite(bytes) || bytes < MIN_MEMORY) {
    throw new UsageError(`invalid memory limit "${value}": use a size of at least 6m such as 512m, 1g or 268435456`);
  }
  return bytes;
}

/** Docker refuses a CPU limit below a hundredth of a CPU. */
export const MIN_CPUS = 0.01;

/** "1.5" -> 1.5 CPUs. Accepts a decimal from 0.01 up to 1024 (checkCpus then holds it to the engine's CPUs). */
export function parseCpus(value: string | number | undefined): number {
  if (value === undefined) return 0;
  const s = String(value).trim();
  const cpus = /^\d+(\.\d+)?$/.test(s) ? Number(s) : NaN;
  if (!(cpus >= MIN_CPUS && cpus <= 1024)) {
    throw new UsageError(`invalid CPU limit "${value}": use a positive number of CPUs such as 0.5, 1 or 1.5 (at least ${MIN_CPUS})`);
  }
  return cpus;
}

/** A CPU limit (parsed) against the engine's CPU count: more than it has is refused in sbx's words. */
export function checkCpus(cpus: number, engineCpus: number): number {
  if (engineCpus > 0 && cpus > engineCpus) {
    throw new UsageError(`invalid --cpus ${cpus}: the Docker engine has ${engineCpus} CPU${engineCpus === 1 ? '' : 's'}, so at most --cpus ${engineCpus}`);
  }
  return cpus;
}

/**
 * Processes (threads count too) a sandbox may have at once, unless --pids-limit says otherwise.
 * Enough for real work (a parallel build, a browser, a language server with its workers: a few
 * hundred at most), while a fork bomb stops at it: every sandbox shares the host's pid space
 * (kernel.pid_max, 32768 on many hosts), so 1024 leaves room for the host and dozens of sandboxes
 * bombing at once. Docker's own default is no limit.
 */
export const DEFAULT_PIDS_LIMIT = 1024;
/** Fewer could not run init, the main command and a shell pipeline through exec. */
export const MIN_PIDS_LIMIT = 16;
/** The kernel's highest pid_max (PID_MAX_LIMIT on 64-bit): no limit can mean more. */
export const MAX_PIDS_LIMIT = 4_194_304;

/** "256" or 256 -> 256 processes; undefined -> the default. */
export function parsePidsLimit(value: string | number | undefined): number {
  if (value === undefined) return DEFAULT_PIDS_LIMIT;
  const s = String(value).trim();
  const n = /^\d{1,7}$/.test(s) ? Number(s) : NaN;
  if (!(n >= MIN_PIDS_LIMIT && n <= MAX_PIDS_LIMIT)) {
    throw new UsageError(`invalid --pids-limit "${value}": accepted: a whole number of processes from ${MIN_PIDS_LIMIT} to ${MAX_PIDS_LIMIT} (default ${DEFAULT_PIDS_LIMIT})`);
  }
  return n;
}

/** Docker image references: name[:tag][@digest], lower-case repository path. */
const IMAGE_REF = /^[a-z0-9]+(?:[._-][a-z0-9]+|\/[a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$/;

export function validateImage(image: string): string {
  if (!IMAGE_REF.test(image) && !/^sha256:[a-f0-9]{64}$/.test(image)) {
    throw new UsageError(`invalid image reference "${image}": use name[:tag], e.g. sbx/base:bookworm or debian:bookworm`);
  }
  return image;
}
