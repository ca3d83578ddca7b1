// Ports exposed behind URLs, and the URL scheme of the gateway (pure).
import { UsageError } from './errors.ts';

export interface ExposedPort {
  port: number;
  public: boolean;
  /** A name of the user's own that routes to this port too (`port expose --domain`). */
  domain?: string;
}

/** What users see for a port: `{ port, url, public }`, and `domain` when it has one (then `url` is on it). */
export interface PortInfo extends ExposedPort {
  url: string;
}

export function parsePort(value: string | number): number {
  const s = String(value).trim();
  const n = /^\d+$/.test(s) ? Number(s) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new UsageError(`invalid port "${value}": use a whole number from 1 to 65535`);
  }
  return n;
}

export function parsePorts(values: ReadonlyArray<string | number>): number[] {
  return [...new Set(values.map(parsePort))];
}

export interface GatewayAddress {
  /** Domain the sandbox hosts live under, e.g. sbx.localhost. */
  domain: string;
  /** The port the gateway listens on (omitted from URLs when it is the scheme's default). */
  port: number;
  /** The gateway serves HTTPS (SBX_GATEWAY_TLS). */
  tls?: boolean;
}

/** http(s)://<host>:<gateway-port>/ (the port left out when it is the scheme's default). */
function gatewayUrl(host: string, gw: GatewayAddress): string {
  return `${gw.tls ? 'https' : 'http'}://${host}${gw.port === (gw.tls ? 443 : 80) ? '' : `:${gw.port}`}/`;
}

/** http(s)://<port>-<sandbox>.<domain>:<gateway-port>/ */
export function portUrl(port: number, sandbox: string, gw: GatewayAddress): string {
  return gatewayUrl(`${port}-${sandbox}.${gw.domain}`, gw);
}

/** The user-facing form of a sandbox's exposed ports. */
export function portInfos(sandbox: string, ports: readonly ExposedPort[], gw: GatewayAddress): PortInfo[] {
  return ports.map((p) =>
    p.domain
      ? { port: p.port, url: gatewayUrl(p.domain, gw), public: p.public, domain: p.domain }
      : { port: p.port, url: portUrl(p.port, sandbox, gw), public: p.public },
  );
}

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** `name` is sbx's domain or under it (names sbx gives out itself): never a name of the user's own. */
export function isOwnHost(name: string, sbxDomain: string): boolean {
  const own = sbxDomain.toLowerCase();
  return name === own || name.endsWith(`.${own}`);
}

/**
 * A name for `port expose --domain`: a DNS name of two labels or more (lower-cased, a final dot
 * dropped), not an address, and outside sbx's own domain, whose names sbx gives out itself
 * (`<port>-<sandbox>.<domain>`, and `<sandbox>.<domain>` for any sandbox made later).
 */
export function parseCustomDomain(value: string, sbxDomain: string): string {
  const name = value.trim().toLowerCase().replace(/\.$/, '');
  const accepted = 'a DNS name such as app.example.test (letters, digits and hyphens, two labels or more)';
  const labels = name.split('.');
  if (name.length > 253 || labels.length < 2 || !labels.every((l) => LABEL.test(l)) || /^\d+$/.test(labels.at(-1)!)) {
    throw new UsageError(`invalid domain "${value}": use ${accepted}`);
  }
  if (name.endsWith('.invalid')) throw new UsageError(`invalid domain "${value}": .invalid names never resolve (RFC 6761); use ${accepted}`);
  if (isOwnHost(name, sbxDomain)) {
    throw new UsageError(`invalid domain "${value}": names under ${sbxDomain} are sbx's own (<port>-<sandbox>.${sbxDomain}); use a name outside it`);
  }
  return name;
}

export type HostRoute =
  | { kind: 'port'; sandbox: string; port: number }
  | { kind: 'sandbox'; sandbox: string }
  | { kind: 'gateway' };

/** A Host header's name as routes know it: lower case, without its port or a final dot. */
export function hostName(hostHeader: string): string {
  return hostHeader.toLowerCase().replace(/:\d+$/, '').replace(/\.$/, '');
}

/**
 * Where a Host header points: `<port>-<sandbox>.<domain>` (a port), `<sandbox>.<domain>` (the
 * sandbox's own host, routed by `/port/<port>/` paths), or the gateway itself; undefined when the
 * host is not under the domain.
 */
export function routeHost(hostHeader: string | undefined, domain: string): HostRoute | undefined {
  if (!hostHeader) return { kind: 'gateway' };
  if (hostHeader.startsWith('[')) return { kind: 'gateway' }; // an IPv6 literal: the gateway itself
  const host = hostName(hostHeader);
  const d = domain.toLowerCase();
  if (host === d || /^[\d.]+$/.test(host) || host === 'localhost') return { kind: 'gateway' };
  if (!host.endsWith(`.${d}`)) return undefined;
  const label = host.slice(0, -(d.length + 1));
  if (label.includes('.')) return undefined;
  const m = /^(\d{1,5})-([a-z0-9][a-z0-9-]{0,62})$/.exec(label);
  if (m) {
    const port = Number(m[1]);
    if (port >= 1 && port <= 65535) return { kind: 'port', sandbox: m[2]!, port };
  }
  return { kind: 'sandbox', sandbox: label };
}

/** `/port/<port>/<rest>` on a sandbox's own host: the port and the path to send upstream. */
export function routePath(rawPath: string): { port: number; path: string } | undefined {
  const m = /^\/port\/(\d{1,5})(\/[^?#]*)?(\?.*)?$/.exec(rawPath);
  if (!m) return undefined;
  const port = Number(m[1]);
  if (port < 1 || port > 65535) return undefined;
  return { port, path: `${m[2] ?? '/'}${m[3] ?? ''}` };
}

/** `--mask-host 'localhost:${PORT}'`: the Host header sent into the sandbox. */
export function maskHost(template: string, port: number): string {
  return template.replaceAll('${PORT}', String(port));
}

export function validateMaskHost(template: string): string {
  if (!/^[A-Za-z0-9.\-_:[\]${}]+$/.test(template) || template.length > 255) {
    throw new UsageError(`invalid --mask-host "${template}": use a host[:port] template such as 'localhost:\${PORT}'`);
  }
  return template;
}
