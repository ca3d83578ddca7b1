// Is a gateway running for this SBX_HOME, and where? Read from the files it keeps (cheap: no
// network, so `sbx ls` and `inspect` can print URLs without starting anything).
import { readFileSync } from 'node:fs';
import { gatewayFiles, type GatewayState } from './settings.ts';
import type { GatewayStatus } from '../daemon-client/protocol.ts';
export type { GatewayStatus };


export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The running gateway of this home, or undefined (stale files are ignored). */
export function runningGateway(home: string): GatewayState | undefined {
  const { state } = gatewayFiles(home);
  try {
    const s = JSON.parse(readFileSync(state, 'utf8')) as GatewayState;
    return alive(s.pid) ? s : undefined;
  } catch {
    return undefined;
  }
}

export function gatewayStatus(home: string): GatewayStatus {
  const s = runningGateway(home);
  const log = gatewayFiles(home).log;
  if (!s) return { running: false, log };
  return { running: true, pid: s.pid, host: s.host, port: s.port, domain: s.domain, url: `${s.tls ? 'https' : 'http'}://${s.domain}:${s.port}/`, startedAt: s.startedAt, engine: s.engine, ...(s.tls ? { tls: true } : {}), h2c: s.h2c ?? (!s.tls && s.engine !== 'nginx'), ...(s.h2c && s.h2cBy ? { h2cBy: s.h2cBy } : {}), ...(s.dnsUpstream ? { dnsUpstream: s.dnsUpstream } : {}), ...(s.egressUser ? { egressUser: s.egressUser } : {}), ...(s.networkLog ? { networkLog: s.networkLog } : {}), log };
}

