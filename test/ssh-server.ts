// An sshd in a remote engine's network namespace (test/remote-engine.ts), so that
// DOCKER_HOST=ssh://root@<engine host>:<port> reaches that engine as it would a real remote host:
// `docker system dial-stdio` there talks to the engine's socket (sshd's SetEnv DOCKER_HOST). Its
// host key and the client's key are made for the run. The client side is an `ssh` wrapper first
// on PATH that adds `-F <config>` (ssh reads ~/.ssh/config from the passwd entry, not $HOME): what
// a user's own ~/.ssh/config does for sbx and the docker CLI alike. Needs root.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import type { RemoteEngine } from './remote-engine.ts';

export const SSHD = '/usr/sbin/sshd';

export interface SshServer {
  /** ssh://root@<host>:<port>, for DOCKER_HOST. */
  dockerHost: string;
  host: string;
  port: number;
  /** The directory of the `ssh` wrapper: put it first on PATH. */
  binDir: string;
  /** Another wrapper's directory, whose known_hosts holds another key for the host: a man in the middle, as ssh sees it. */
  wrongKeyBinDir(): string;
  /** sshd's log. */
  log(): string;
  /** Stops sshd and removes its files; idempotent. */
  close(): Promise<void>;
}

/** Why no sshd can be run here, or undefined when one can. */
export function sshdMissing(): string | undefined {
  if (!existsSync(SSHD)) return `${SSHD} not found (scripts/test installs openssh-server)`;
  try {
    execFileSync('ssh', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'no ssh client on PATH';
  }
  return undefined;
}

const keygen = (file: string) => execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'sbx-test', '-f', file], { stdio: 'ignore' });

/** Resolves once something accepts on host:port from this namespace (10 s). */
async function listening(host: string, port: number, sshd: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = createConnection(port, host);
      s.once('connect', () => (s.destroy(), r(true)));
      s.once('error', () => r(false));
    });
    if (ok) return;
    if (sshd.exitCode !== null || Date.now() > deadline) throw new Error(`sshd ${sshd.exitCode !== null ? `exited ${sshd.exitCode}` : 'did not listen in 10 s'}: ${log()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** sshd processes in a namespace (none once it is gone). */
export function sessions(netns: string): number[] {
  let pids: string[];
  try {
    pids = execFileSync('ip', ['netns', 'pids', netns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').filter(Boolean);
  } catch {
    return [];
  }
  return pids.map(Number).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sshd';
    } catch {
      return false;
    }
  });
}

/** Removes the files of servers whose test process is gone (killed runs; their sshd died with the engine's namespace). */
function removeStale(): void {
  for (const name of readdirSync('/tmp').filter((n) => n.startsWith('sbxssh-'))) {
    const file = `/tmp/${name}/owner`;
    if (!existsSync(file)) continue; // just made by a run that is starting
    try {
      process.kill(Number(readFileSync(file, 'utf8')), 0);
    } catch {
      rmSync(`/tmp/${name}`, { recursive: true, force: true });
    }
  }
}

export async function startSshServer(engine: RemoteEngine, port = 2222): Promise<SshServer> {
  removeStale();
  const dir = mkdtempSync('/tmp/sbxssh-');
  writeFileSync(join(dir, 'owner'), `${process.pid}\n`);
  const host = engine.hostAddress;
  keygen(join(dir, 'host_key'));
  keygen(join(dir, 'client_key'));
  keygen(join(dir, 'other_host_key'));
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(join(dir, 'client_key.pub')));
  // sshd's privilege separation directory, which the package's service would have made.
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `ListenAddress ${host}:${port}`,
      `HostKey ${join(dir, 'host_key')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'AuthenticationMethods publickey',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      'AllowUsers root',
      'UsePAM no',
      // The keys are in /tmp, whose mode StrictModes refuses.
      'StrictModes no',
      // The remote docker CLI's engine: the one in this namespace, not the machine's default.
      `SetEnv DOCKER_HOST=unix://${engine.socket}`,
      '',
    ].join('\n'),
  );
  /** An `ssh` wrapper in DIR/<name>/ whose config trusts the host keys in knownHosts. */
  const client = (name: string, knownHosts: string): string => {
    const binDir = join(dir, name);
    mkdirSync(binDir);
    const config = join(binDir, 'ssh_config');
    writeFileSync(
      config,
      [
        `Host ${host}`,
        `  IdentityFile ${join(dir, 'client_key')}`,
        '  IdentitiesOnly yes',
        '  IdentityAgent none',
        `  UserKnownHostsFile ${knownHosts}`,
        '  GlobalKnownHostsFile /dev/null',
        '  StrictHostKeyChecking accept-new',
        '  LogLevel ERROR',
        '',
      ].join('\n'),
    );
    writeFileSync(join(binDir, 'ssh'), `#!/bin/sh\nexec /usr/bin/ssh -F ${config} "$@"\n`);
    chmodSync(join(binDir, 'ssh'), 0o755);
    return binDir;
  };
  const binDir = client('bin', join(dir, 'known_hosts'));

  const logFile = join(dir, 'sshd.log');
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8').trim().split('\n').slice(-10).join('\n') : '');
  const sshd = spawn('nsenter', [`--net=/var/run/netns/${engine.netns}`, '--', SSHD, '-D', '-f', join(dir, 'sshd_config'), '-E', logFile], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => sshd.once('exit', () => r()));
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    if (sshd.exitCode === null && sshd.signalCode === null) {
      sshd.kill('SIGTERM');
      await exited;
    }
    // Its sessions outlive it (a client that still holds a connection): ours are the only sshd
    // processes in the engine's namespace.
    for (const pid of sessions(engine.netns)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await listening(host, port, sshd, log);
  } catch (err) {
    await close();
    throw err;
  }
  return {
    dockerHost: `ssh://root@${host}:${port}`,
    host,
    port,
    binDir,
    wrongKeyBinDir() {
      const file = join(dir, 'wrong_known_hosts');
      const key = readFileSync(join(dir, 'other_host_key.pub'), 'utf8').split(' ').slice(0, 2).join(' ');
      writeFileSync(file, `[${host}]:${port} ${key}\n`);
      return existsSync(join(dir, 'wrong')) ? join(dir, 'wrong') : client('wrong', file);
    },
    log,
    close,
  };
}
