// The hard limit on open files of this process (and so of the nginx and HAProxy it starts): a
// child may raise its soft limit up to it, never past it (setrlimit fails, as nginx's
// worker_rlimit_nofile did here with a hard limit of 20,000).

/** The hard limit, or undefined when it is unlimited or cannot be read. */
export function hardOpenFiles(limits = readLimits()): number | undefined {
  const hard = /^Max open files\s+\S+\s+(\S+)/m.exec(limits)?.[1];
  return !hard || hard === 'unlimited' ? undefined : Number(hard);
}

function readLimits(): string {
  try {
    return process.getBuiltinModule('node:fs').readFileSync('/proc/self/limits', 'utf8');
  } catch {
    return '';
  }
}
