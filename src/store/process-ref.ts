// Which process works on a store record, and whether it still runs. A record being created or
// removed names its process (pid and start time); when that process is gone (killed, crashed,
// the machine rebooted) the record is stale and the reconciler finishes or rolls it back.
import { readFileSync } from 'node:fs';
import type { ProcessRef } from '../core/sandbox.ts';

/**
 * The start time of a process, as Linux gives it (/proc/PID/stat, field 22: clock ticks after
 * boot); undefined elsewhere or when the process is gone. With it, a pid that was reused by a later
 * process does not pass for the one that wrote the record.
 */
export function processStart(pid: number): string | undefined {
  return procStat(pid)?.start;
}

/** State (field 3: R, S, Z...) and start time (field 22) from /proc/PID/stat. */
function procStat(pid: number): { state: string; start: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count from the last ")".
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { state: fields[0]!, start: fields[19]! };
  } catch {
    return undefined;
  }
}

let self: ProcessRef | undefined;

/** This process, as records name it. */
export function thisProcess(): ProcessRef {
  if (!self) {
    const start = processStart(process.pid);
    self = { pid: process.pid, ...(start ? { start } : {}) };
  }
  return self;
}

export function sameProcess(a: ProcessRef | undefined, b: ProcessRef | undefined): boolean {
  return !!a && !!b && a.pid === b.pid && a.start === b.start;
}

/** Whether the process a record names still runs (a pid of another user counts as running). */
export function processAlive(ref: ProcessRef): boolean {
  try {
    process.kill(ref.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = procStat(ref.pid);
  // No /proc entry although the pid answers: another system; trust the pid.
  if (!now) return true;
  // A killed process that nobody reaped yet (a zombie) does no more work.
  if (now.state === 'Z' || now.state === 'X') return false;
  return ref.start === undefined || now.start === ref.start;
}
