// What a sandbox's container may do to the host: its capabilities, privileges and process count.
// The code inside a sandbox is the adversary; these settings are the same for every sandbox.
import { DEFAULT_PIDS_LIMIT } from '../core/options.ts';
import type { SandboxRecord } from '../core/sandbox.ts';

/**
 * The only capabilities a sandbox's root keeps (all others are dropped, the bounding set
 * included): what a Debian userland needs as root, and no more.
 * - CHOWN, DAC_OVERRIDE, FOWNER, FSETID: files owned by other users (dpkg, chown, setgid dirs);
 * - SETUID, SETGID: changing user (apt's downloads as _apt, su, runuser, setpriv, daemons);
 * - KILL: signalling other users' processes;
 * - NET_BIND_SERVICE: servers on ports below 1024 (80, 443) inside the sandbox.
 * Docker's defaults also grant NET_RAW (raw sockets: spoofing on the bridge), MKNOD (device
 * nodes), AUDIT_WRITE (the host's audit log), SYS_CHROOT, SETFCAP and SETPCAP; none is needed
 * (su and PAM work without AUDIT_WRITE), so none is kept. NET_ADMIN, SYS_ADMIN, SYS_PTRACE and the
 * rest were never granted.
 */
export const SANDBOX_CAPABILITIES = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'SETUID', 'SETGID', 'KILL', 'NET_BIND_SERVICE'] as const;

/** The container HostConfig fields that confine a sandbox. */
export function hardening(record: SandboxRecord) {
  return {
    CapDrop: ['ALL'],
    CapAdd: [...SANDBOX_CAPABILITIES],
    // setuid binaries and file capabilities grant nothing: no process gains what its parent lacks.
    SecurityOpt: ['no-new-privileges'],
    // A fork bomb stops here; records made before the limit existed get the default.
    PidsLimit: record.pidsLimit ?? DEFAULT_PIDS_LIMIT,
  };
}
