// Where the gateway listens and which domain it serves, from the environment, and the files it
// keeps in SBX_HOME (pid, address, log).
import { join } from 'node:path';
import { UsageError } from '../core/errors.ts';

export const DEFAULT_GATEWAY_PORT = 7070;
export const DEFAULT_DOMAIN = 'sbx.localhost';

export interface GatewaySettings {
  host: string;
  /** 0 picks a free port (the running gateway records the one it got). */
  port: number;
  domain: string;
}

export function gatewaySettings(env: NodeJS.ProcessEnv = process.env): GatewaySettings {
  const portText = env.SBX_GATEWAY_PORT ?? String(DEFAULT_GATEWAY_PORT);
  const port = /^\d+$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 0 && port <= 65535)) throw new UsageError(`invalid SBX_GATEWAY_PORT "${portText}": use 0 (any free port) to 65535`);
  const domain = (env.SBX_DOMAIN ?? DEFAULT_DOMAIN).toLowerCase().replace(/\.$/, '');
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(domain)) {
    throw new UsageError(`invalid SBX_DOMAIN "${env.SBX_DOMAIN}": use a DNS name such as sbx.localhost`);
  }
  return { host: env.SBX_GATEWAY_HOST || '127.0.0.1', port, domain };
}

export function gatewayFiles(home: string) {
  return {
    pid: join(home, 'gateway.pid'),
    state: join(home, 'gateway.json'),
    log: join(home, 'gateway.log'),
    lock: join(home, 'gateway.lock'),
    run: join(home, 'run'),
  };
}

/** What a running gateway writes to gateway.json. */
export interface GatewayState {
  pid: number;
  host: string;
  port: number;
  domain: string;
  startedAt: string;
  /** "nginx" when nginx carries the fast path, "node" when this process does everything. */
  engine?: 'nginx' | 'node';
  /** The control socket that carries out create and rm (see control.ts). */
  control?: string;
  /** The engine this daemon talks to: a client with another DOCKER_HOST does its own work. */
  dockerHost?: string;
}
