// Who holds a TCP port (Linux /proc): for a port the gateway cannot bind, its error names the
// holder, and for an nginx of an sbx gateway, which SBX_HOME it serves and whether that gateway
// still runs (a stale nginx says how to stop it). Also: ending this home's own stale nginx.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { runningGateway } from './state.ts';

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

export function cmdline(pid: number): string | undefined {
  return read(`/proc/${pid}/cmdline`)?.replace(/\0+$/, '').replace(/\0/g, ' ');
}

function ppid(pid: number): number | undefined {
  const m = /^PPid:\s+(\d+)/m.exec(read(`/proc/${pid}/status`) ?? '');
  return m ? Number(m[1]) : undefined;
}

/** Inodes of the sockets listening on `port` (any address: a wildcard holder blocks too). */
function listeningInodes(port: number): Set<string> {
  const inodes = new Set<string>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of (read(file) ?? '').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== '0A') continue; // LISTEN
      if (parseInt(f[1]!.split(':')[1]!, 16) === port && f[9] !== '0') inodes.add(f[9]!);
    }
  }
  return inodes;
}

/** The processes holding a listening socket on `port`. */
export function portHolders(port: number): number[] {
  const inodes = listeningInodes(port);
  if (inodes.size === 0) return [];
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${name}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${name}/fd/${fd}`);
      } catch {
        continue;
      }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      if (m && inodes.has(m[1]!)) {
        pids.push(Number(name));
        break;
      }
    }
  }
  return pids.sort((x, y) => x - y);
}

/** The run directory of an sbx gateway's nginx, from its command line (`-p <home>/run/`). */
function nginxRunDir(cmd: string): string | undefined {
  if (!/\bnginx\b/.test(cmd)) return undefined;
  const m = /(?:^|\s)-p\s+(\S+)/.exec(cmd);
  return m ? m[1]!.replace(/\/+$/, '') : undefined;
}

/** The run directory of an sbx gateway's h2c front, from its command line (`-f <home>/run/haproxy.cfg`). */
function haproxyRunDir(cmd: string): string | undefined {
  if (!/\bhaproxy\b/.test(cmd)) return undefined;
  const m = /(?:^|\s)-f\s+(\S+)\/haproxy\.cfg(?:\s|$)/.exec(cmd);
  return m ? m[1]!.replace(/\/+$/, '') : undefined;
}

/** Which of an sbx gateway's helpers this command line is, and its run directory. */
function gatewayHelper(cmd: string): { name: string; runDir: string } | undefined {
  const nginx = nginxRunDir(cmd);
  if (nginx) return { name: 'nginx', runDir: nginx };
  const haproxy = haproxyRunDir(cmd);
  return haproxy ? { name: 'haproxy', runDir: haproxy } : undefined;
}

/** Words for whoever holds `port`, e.g. "the gateway of SBX_HOME=/h (pid 12) holds it". */
export function describePortHolder(port: number): string | undefined {
  let pids: number[];
  try {
    pids = portHolders(port);
  } catch {
    return undefined;
  }
  if (pids.length === 0) return undefined;
  // nginx: the master (whose parent is not an nginx holding the port too) speaks for its workers.
  let pid = pids.find((p) => !pids.includes(ppid(p) ?? -1)) ?? pids[0]!;
  let cmd = cmdline(pid) ?? '';
  const helper = gatewayHelper(cmd);
  // HAProxy's worker holds the port; its master (started by the gateway) speaks for it.
  const parent = ppid(pid);
  if (helper?.name === 'haproxy' && parent && gatewayHelper(cmdline(parent) ?? '')?.name === 'haproxy') {
    pid = parent;
    cmd = cmdline(pid) ?? cmd;
  }
  if (helper && basename(helper.runDir) === 'run') {
    const home = dirname(helper.runDir);
    const gw = runningGateway(home);
    if (gw && ppid(pid) === gw.pid) return `the sbx gateway of SBX_HOME=${home} (pid ${gw.pid}, its ${helper.name} pid ${pid}) holds it: stop it with SBX_HOME=${home} sbx gateway stop`;
    return `a stale ${helper.name} (pid ${pid}) of the sbx gateway of SBX_HOME=${home} holds it; that gateway is gone: stop it with kill ${pid}`;
  }
  if (/\bgateway run\b/.test(cmd)) {
    const home = /(?:^|\0)SBX_HOME=([^\0]*)/.exec(read(`/proc/${pid}/environ`) ?? '')?.[1];
    if (home) return `the sbx gateway of SBX_HOME=${home} (pid ${pid}) holds it: stop it with SBX_HOME=${home} sbx gateway stop`;
  }
  return `pid ${pid} (${cmd.slice(0, 80) || 'unknown'}) holds it`;
}

/** The message for a port the gateway cannot listen on. */
export function portInUse(host: string, port: number): string {
  const holder = describePortHolder(port);
  return `port ${port} on ${host} is in use${holder ? `: ${holder}` : ''}; or set SBX_GATEWAY_PORT to a free port (0 picks one)`;
}

/**
 * Ends an nginx this home's gateway left running (killed outright, its pid file still there), once
 * its command line shows it is that nginx. Resolves with its pid when there was one.
 */
/** Processes of process group `pgid` (Linux /proc). */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = read(`/proc/${name}/stat`);
    if (!stat) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid && fields[0] !== 'Z') out.push(Number(name));
  }
  return out;
}

export async function endStaleNginx(runDir: string): Promise<number | undefined> {
  const pid = Number((read(`${runDir}/nginx.pid`) ?? '').trim());
  if (!(pid > 1)) return undefined;
  const cmd = cmdline(pid);
  if (!cmd) {
    // The master is gone (killed outright) but its workers may remain, in its process group.
    const orphans = groupMembers(pid);
    if (orphans.length && orphans.every((p) => /^nginx: worker process/.test(cmdline(p) ?? ''))) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {}
      return pid;
    }
    return undefined;
  }
  if (nginxRunDir(cmd) !== runDir.replace(/\/+$/, '')) return undefined;
  return endProcess(pid);
}

/** Ends the h2c front (HAProxy) this home's gateway left running, once its command line shows it is that one. */
export async function endStaleHaproxy(runDir: string): Promise<number | undefined> {
  const pid = Number((read(`${runDir}/haproxy.pid`) ?? '').trim());
  if (!(pid > 1)) return undefined;
  const cmd = cmdline(pid);
  if (!cmd || haproxyRunDir(cmd) !== runDir.replace(/\/+$/, '')) return undefined;
  return endProcess(pid);
}

/** SIGTERM, then SIGKILL after 3 s; resolves with the pid once it is gone. */
async function endProcess(pid: number): Promise<number | undefined> {
  const gone = () => {
    const stat = read(`/proc/${pid}/stat`);
    return !stat || stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z';
  };
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return undefined;
  }
  const deadline = Date.now() + 3000;
  while (!gone() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  if (!gone()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
    const hard = Date.now() + 2000;
    while (!gone() && Date.now() < hard) await new Promise((r) => setTimeout(r, 20));
  }
  return pid;
}
