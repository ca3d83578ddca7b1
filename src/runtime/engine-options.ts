// dockerode for the engine the environment names. A tcp:// engine gets its options here, by the
// docker CLI's rules (docker-host.ts), with its TLS files read now; ssh:// goes through the system
// ssh (ssh-dial.ts); unix:// and none are left to docker-modem's own reading of the environment.
import Docker from 'dockerode';
import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import { dockerHostScheme, tcpEngine } from './docker-host.ts';
import { parseSshHost, sshAgent } from './ssh-dial.ts';

/** A TLS file: ca.pem must be there, the client's cert.pem and key.pem may both be absent. */
function readTlsFile(engine: string, certPath: string, name: string, optional = false): Buffer | undefined {
  const file = join(certPath, name);
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    if (optional && code === 'ENOENT') return undefined;
    throw new RuntimeError(
      `could not read ${file} (${code}) for the Docker engine at ${engine} over TLS: DOCKER_CERT_PATH (or the docker context) must hold ca.pem, and cert.pem with key.pem for a client certificate`,
      { cause: err },
    );
  }
}

/** The client certificate and key, both or neither (one alone is an error naming the other). */
function clientPair(engine: string, certPath: string): { cert?: Buffer; key?: Buffer } {
  const cert = readTlsFile(engine, certPath, 'cert.pem', true);
  const key = readTlsFile(engine, certPath, 'key.pem', true);
  if (cert && !key) readTlsFile(engine, certPath, 'key.pem');
  if (key && !cert) readTlsFile(engine, certPath, 'cert.pem');
  return cert && key ? { cert, key } : {};
}

/** dockerode's options for a tcp:// engine (its TLS files read now), or undefined for any other. */
export function engineOptions(env: NodeJS.ProcessEnv = process.env): Docker.DockerOptions | undefined {
  const tcp = tcpEngine(env);
  if (!tcp) return undefined;
  if (!tcp.tls) return { host: tcp.host, port: tcp.port, protocol: 'http', ca: undefined, cert: undefined, key: undefined };
  const engine = env.DOCKER_HOST!;
  // Unverified, the CA does not matter (a context with SkipTLSVerify may have none).
  const ca = readTlsFile(engine, tcp.tls.certPath, 'ca.pem', !tcp.tls.verify);
  return {
    host: tcp.host,
    port: tcp.port,
    protocol: 'https',
    ca,
    ...clientPair(engine, tcp.tls.certPath),
    // docker-modem passes no rejectUnauthorized of its own: an agent's options win over a request's.
    ...(tcp.tls.verify ? {} : { agent: new Agent({ keepAlive: true, rejectUnauthorized: false }) }),
  } as Docker.DockerOptions;
}

/**
 * The client for the engine the environment names (dockerode's defaults for unix://).
 * docker-modem's own ssh:// needs ssh2, which is not bundled: an ssh engine gets an agent whose
 * connections are the system ssh (ssh-dial.ts), for every request, hijacked ones included. A
 * placeholder socket path, not a host, so that the modem builds requests as for a unix socket (a
 * host goes through url.parse, which Node warns about on every run); the agent ignores it.
 */
export function engineClient(env: NodeJS.ProcessEnv = process.env): Docker {
  const host = env.DOCKER_HOST;
  const scheme = host ? dockerHostScheme(host) : 'unix';
  if (scheme === 'ssh') {
    // docker-modem takes `agent` (its types do not say so); `host: undefined` drops the one it read from DOCKER_HOST.
    return withoutCertPath(() => new Docker({ socketPath: 'docker-over-ssh', host: undefined, protocol: 'http', agent: sshAgent(parseSshHost(host!)) } as Docker.DockerOptions));
  }
  const options = engineOptions(env);
  if (!options) return new Docker(); // unix:// (docker-modem reads no TLS files for it), npipe://
  const docker = withoutCertPath(() => new Docker(options));
  quietUrlParse(docker.modem as { dial: (...args: unknown[]) => unknown });
  return docker;
}

/**
 * docker-modem reads DOCKER_CERT_PATH's files itself whatever it is given, and throws on a
 * missing one (even for plain HTTP or ssh://): hidden while it is made (a tcp:// client's options
 * already hold the files it needs; the docker CLI ignores them for ssh://).
 */
function withoutCertPath<T>(make: () => T): T {
  const saved = process.env.DOCKER_CERT_PATH;
  delete process.env.DOCKER_CERT_PATH;
  try {
    return make();
  } finally {
    if (saved !== undefined) process.env.DOCKER_CERT_PATH = saved;
  }
}

/**
 * docker-modem builds each request to a host with url.parse(), which Node flags as deprecated
 * (DEP0169) on stderr, a second line under every answer. Silenced while it dials (synchronously).
 */
function quietUrlParse(modem: { dial: (...args: unknown[]) => unknown }): void {
  const dial = modem.dial.bind(modem);
  modem.dial = (...args: unknown[]) => {
    const was = process.noDeprecation;
    process.noDeprecation = true;
    try {
      return dial(...args);
    } finally {
      process.noDeprecation = was;
    }
  };
}
