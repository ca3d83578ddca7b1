// Where the gateway listens and which domain it serves, from the environment, and the files it
// keeps in SBX_HOME (pid, address, log).
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { EgressListeners } from '../net/nft-rules.ts';
import { UsageError } from '../core/errors.ts';

export const DEFAULT_GATEWAY_PORT = 7070;
export const DEFAULT_DOMAIN = 'sbx.localhost';

export interface GatewaySettings {
  host: string;
  /** 0 picks a free port (the running gateway records the one it got). */
  port: number;
  domain: string;
  /** SBX_GATEWAY_TLS: serve HTTPS (HTTP/2 by ALPN, and HTTP/1.1) with a certificate from sbx's CA. */
  tls: boolean;
  /**
   * SBX_GATEWAY_H2C, for the nginx engine on plain HTTP: h2c on the port, from nginx itself (1.25.1
   * and later) or through the HAProxy front (older nginx). 'auto' (the default): when either can;
   * true: required; false: never (HTTP/1.1 only).
   */
  h2c: boolean | 'auto';
  /**
   * SBX_GATEWAY_SOURCE_LIMIT: connections, and requests in flight, that one client address may
   * hold on the gateway port at once (loopback clients are not limited); 0 for no limit.
   */
  sourceLimit: number;
}

export const DEFAULT_SOURCE_LIMIT = 512;

/** SBX_GATEWAY_SOURCE_LIMIT: a whole number, or a usage error naming what is accepted. */
export function sourceLimitSetting(text: string | undefined): number {
  const v = (text ?? '').trim();
  if (v === '') return DEFAULT_SOURCE_LIMIT;
  if (/^\d{1,6}$/.test(v) && Number(v) <= 100_000) return Number(v);
  throw new UsageError(`invalid SBX_GATEWAY_SOURCE_LIMIT "${text}": use 0 (no limit) to 100000 (connections and requests in flight per client address; default ${DEFAULT_SOURCE_LIMIT})`);
}

/** SBX_GATEWAY_TLS: on or off, or a usage error naming what is accepted. */
export function tlsSetting(text: string | undefined): boolean {
  const v = (text ?? '').trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['', '0', 'false', 'no', 'off'].includes(v)) return false;
  throw new UsageError(`invalid SBX_GATEWAY_TLS "${text}": use 1 (serve HTTPS) or 0`);
}

/** SBX_GATEWAY_H2C: on, off or auto, or a usage error naming what is accepted. */
export function h2cSetting(text: string | undefined): boolean | 'auto' {
  const v = (text ?? '').trim().toLowerCase();
  if (['', 'auto'].includes(v)) return 'auto';
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new UsageError(`invalid SBX_GATEWAY_H2C "${text}": use 1 (h2c required: nginx 1.25.1+ or HAProxy in front), 0 (none) or auto (when either can)`);
}

export function gatewaySettings(env: NodeJS.ProcessEnv = process.env): GatewaySettings {
  const portText = env.SBX_GATEWAY_PORT ?? String(DEFAULT_GATEWAY_PORT);
  const port = /^\d+$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 0 && port <= 65535)) throw new UsageError(`invalid SBX_GATEWAY_PORT "${portText}": use 0 (any free port) to 65535`);
  const domain = (env.SBX_DOMAIN ?? DEFAULT_DOMAIN).toLowerCase().replace(/\.$/, '');
  if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(domain)) {
    throw new UsageError(`invalid SBX_DOMAIN "${env.SBX_DOMAIN}": use a DNS name such as sbx.localhost`);
  }
  return { host: env.SBX_GATEWAY_HOST || '127.0.0.1', port, domain, tls: tlsSetting(env.SBX_GATEWAY_TLS), h2c: h2cSetting(env.SBX_GATEWAY_H2C), sourceLimit: sourceLimitSetting(env.SBX_GATEWAY_SOURCE_LIMIT) };
}

export interface DnsUpstream {
  host: string;
  port: number;
}

/** Where sbx's DNS forwarder (and the egress proxy) resolve: SBX_DNS_UPSTREAM, else the host's resolver. */
export function dnsUpstream(env: NodeJS.ProcessEnv = process.env, resolvConf = '/etc/resolv.conf'): DnsUpstream {
  const text = env.SBX_DNS_UPSTREAM?.trim();
  if (text) {
    const m = /^\[([0-9a-fA-F:.]+)\](?::(\d+))?$/.exec(text) ?? /^([^:]+)(?::(\d+))?$/.exec(text) ?? [text, text, undefined];
    const host = m[1]!;
    const port = m[2] === undefined ? 53 : Number(m[2]);
    if (!isIP(host) || !(port >= 1 && port <= 65535)) {
      throw new UsageError(`invalid SBX_DNS_UPSTREAM "${text}": accepted: an IP address with an optional port (10.0.0.2, 10.0.0.2:5353, [2001:db8::1]:53)`);
    }
    return { host, port };
  }
  let conf = '';
  try {
    conf = readFileSync(resolvConf, 'utf8');
  } catch {}
  const server = /^\s*nameserver\s+(\S+)/m.exec(conf)?.[1]?.replace(/%.*$/, '');
  return { host: server && isIP(server) ? server : '127.0.0.1', port: 53 };
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

export type H2cBy = 'nginx' | 'haproxy' | 'node';

/** What a running gateway writes to gateway.json. */
export interface GatewayState {
  pid: number;
  host: string;
  port: number;
  domain: string;
  startedAt: string;
  /** "nginx" when nginx carries the fast path, "node" when this process does everything. */
  engine?: 'nginx' | 'node';
  /** It serves HTTPS (SBX_GATEWAY_TLS): its URLs start with https://. */
  tls?: boolean;
  /** Its port takes HTTP/2 with prior knowledge (h2c) beside HTTP/1.1 (always with the Node engine). */
  h2c?: boolean;
  /** Who tells h2c from HTTP/1.1 on the port, when it takes h2c: nginx itself (1.25.1+), HAProxy before an older nginx, or the Node engine. */
  h2cBy?: H2cBy;
  /** The CA its certificate chains to, when it is sbx's own (clients of this machine trust it). */
  tlsCa?: string;
  /**
   * A copy of the certificate it serves now (sbx's or SBX_TLS_CERT's, as the refresher last took
   * it): `port expose --domain` checks that it covers the name.
   */
  tlsCert?: string;
  /** The control socket that carries out create and rm (see control.ts). */
  control?: string;
  /** The engine this daemon talks to: a client with another DOCKER_HOST does its own work. */
  dockerHost?: string;
  /** Where sandboxes' DNS and Host/SNI-checked web traffic arrive (ports on every host address). */
  egress?: EgressListeners;
  /** The resolver behind sbx's DNS forwarder ("ip:port"), fixed when the gateway starts. */
  dnsUpstream?: string;
  /** The user the DNS forwarder and the egress proxy (the parsers of sandbox traffic) run as. */
  egressUser?: string;
  /** What the network log records (GatewayStatus.networkLog). */
  networkLog?: string;
  /** The control protocol it speaks (src/daemon-client/protocol.ts); absent: 1. */
  protocol?: number;
  /** sbx's version. */
  version?: string;
}
