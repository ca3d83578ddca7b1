// What DOCKER_HOST and the TLS variables mean for a tcp:// engine, by the docker CLI's rules
// (cli/flags/options.go, opts/hosts.go), where docker-modem's own reading of them differs:
// - TLS when DOCKER_TLS_VERIFY or DOCKER_TLS is non-empty (any value, "0" too); the engine's
//   certificate is verified unless only DOCKER_TLS is set. Port 2376 alone is not TLS.
// - The files come from DOCKER_CERT_PATH, else the docker config dir (DOCKER_CONFIG, ~/.docker):
//   ca.pem must be there (unless unverified); cert.pem and key.pem (the client certificate) if the
//   engine wants one.
// - DOCKER_CERT_PATH alone is plain HTTP, its files unread. tcp://host without a port is :2375.
// Every other DOCKER_HOST (unix://, ssh://, none) is left to docker-modem. engine-options.ts
// builds the client from this.
import { homedir } from 'node:os';
import { join } from 'node:path';
import { RuntimeError, UsageError } from '../core/errors.ts';

export interface EngineTls {
  /** Check the engine's certificate against ca.pem (DOCKER_TLS_VERIFY). */
  verify: boolean;
  /** Where ca.pem, cert.pem and key.pem are. */
  certPath: string;
}

export interface TcpEngine {
  host: string;
  port: string;
  tls?: EngineTls;
}

/**
 * DOCKER_HOST's scheme, lower-cased (a bare host:port is tcp), refused unless the docker CLI takes
 * it too: left to docker-modem, http:// or TCP:// would be plain HTTP whatever DOCKER_TLS_VERIFY says.
 */
export function dockerHostScheme(raw: string): 'unix' | 'tcp' | 'ssh' | 'npipe' {
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(raw);
  if (!m) {
    if (raw.startsWith('/') || raw.startsWith('.')) throw new UsageError(`DOCKER_HOST=${raw}: a socket path needs unix:// before it; expected unix://PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]`);
    return 'tcp';
  }
  const scheme = m[1]!.toLowerCase();
  if (scheme === 'unix' || scheme === 'tcp' || scheme === 'ssh' || scheme === 'npipe') return scheme;
  throw new UsageError(`DOCKER_HOST=${raw}: the docker CLI does not take ${scheme}://; expected unix://PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]`);
}

/** The tcp:// engine DOCKER_HOST names (a bare host:port counts), or undefined for any other. */
export function tcpEngine(env: NodeJS.ProcessEnv = process.env): TcpEngine | undefined {
  let raw = env.DOCKER_HOST;
  if (!raw) return undefined;
  if (dockerHostScheme(raw) !== 'tcp') return undefined;
  const bare = !raw.includes('://');
  if (!bare) raw = `tcp://${raw.slice(raw.indexOf('://') + 3)}`;
  let url: URL;
  try {
    url = new URL(bare ? `tcp://${raw}` : raw);
  } catch {
    throw new RuntimeError(`DOCKER_HOST=${raw} is not an engine address (tcp://host:port)`);
  }
  const tls = !!env.DOCKER_TLS_VERIFY || !!env.DOCKER_TLS;
  const certPath = env.DOCKER_CERT_PATH || env.DOCKER_CONFIG || join(homedir(), '.docker');
  return { host: url.hostname, port: url.port || '2375', ...(tls ? { tls: { verify: !!env.DOCKER_TLS_VERIFY, certPath } } : {}) };
}
