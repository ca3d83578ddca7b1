// Turning dockerode / engine errors into sbx errors with a message for people.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { RuntimeError } from '../core/errors.ts';
import { tcpEngine } from './docker-host.ts';

interface EngineError {
  statusCode?: number;
  code?: string;
  json?: { message?: string } | null;
  reason?: string;
  message?: string;
  syscall?: string;
  path?: string;
}

export function statusOf(err: unknown): number | undefined {
  return (err as EngineError | undefined)?.statusCode;
}

/** "Already gone" (404) and "already in that state" (304) count as success for cleanup. */
export function isGoneOrDone(err: unknown): boolean {
  const s = statusOf(err);
  return s === 404 || s === 304;
}

export function engineMessage(err: unknown): string {
  const e = err as EngineError;
  const msg = e?.json?.message ?? e?.reason ?? e?.message ?? String(err);
  return msg.replace(/^\(HTTP code \d+\)\s*/, '').trim();
}

export function describeEngine(): string {
  return process.env.DOCKER_HOST || 'unix:///var/run/docker.sock';
}

/** Node's codes for an engine certificate that ca.pem does not vouch for. */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'CERT_SIGNATURE_FAILURE', 'CERT_UNTRUSTED', 'CERT_REJECTED',
]);

/** What a failed TLS connection to the engine means, in one line with what to check; else undefined. */
export function tlsFailure(err: unknown, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const e = err as EngineError | undefined;
  const code = e?.code ?? '';
  const tcp = tcpEngine(env);
  if (!tcp) return undefined;
  const at = `the Docker engine at ${env.DOCKER_HOST}`;
  // A plain engine answers a TLS hello with HTTP; a TLS one answers plain HTTP with this 400.
  if (!tcp.tls) {
    return statusOf(err) === 400 && /HTTP request to an HTTPS server/i.test(engineMessage(err))
      ? `${at} wants TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH to its client files (ca.pem, cert.pem, key.pem)`
      : undefined;
  }
  const dir = tcp.tls.certPath;
  if (UNTRUSTED.has(code)) return `${at} has a certificate that ${join(dir, 'ca.pem')} did not sign (${code}): DOCKER_CERT_PATH must hold that engine's CA as ca.pem`;
  if (code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID') return `${at} has a certificate that is not valid now (${code}): renew it, or check this machine's clock`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `${at} has a certificate for another name (${code}): it must name ${tcp.host}, or DOCKER_HOST must use a name it has`;
  if (/^ERR_SSL_.*ALERT/.test(code)) {
    const have = existsSync(join(dir, 'cert.pem')) ? `${join(dir, 'cert.pem')} and key.pem must be` : `${dir} has no cert.pem and key.pem: it wants`;
    return `${at} refused this client's TLS certificate (${code}): ${have} a client certificate signed by the CA the engine trusts (dockerd --tlscacert)`;
  }
  if (code === 'ECONNRESET') return `${at} closed the connection during TLS (ECONNRESET): it may refuse this client's certificate; check cert.pem and key.pem in ${dir}`;
  if (/^ERR_SSL_(WRONG_VERSION_NUMBER|PACKET_LENGTH_TOO_LONG|HTTP_REQUEST)$/.test(code) || (code === 'EPROTO' && /wrong version number|packet length/i.test(e?.message ?? ''))) {
    return `${at} does not speak TLS (${code}): for a plain tcp:// engine unset DOCKER_TLS_VERIFY (and DOCKER_TLS), or use its TLS port`;
  }
  return undefined;
}

export function toRuntimeError(err: unknown, doing: string): RuntimeError {
  const code = (err as EngineError)?.code;
  const tls = tlsFailure(err);
  if (tls) return new RuntimeError(tls, { cause: err });
  // A file, not the engine's socket: the TLS material (engine-options.ts reads it first).
  const file = (err as EngineError)?.syscall === 'open' ? (err as EngineError).path : undefined;
  if (file && (code === 'ENOENT' || code === 'EACCES')) {
    return new RuntimeError(`could not read ${file} (${code}) for the Docker engine at ${describeEngine()}: check DOCKER_CERT_PATH`, { cause: err });
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return new RuntimeError(
      `the Docker engine at ${describeEngine()} does not let this user in (${code}): run sbx as root or as a member of the docker group, or set DOCKER_HOST`,
      { cause: err },
    );
  }
  if (code === 'ECONNREFUSED' || code === 'ENOENT') {
    return new RuntimeError(
      `no Docker engine answers at ${describeEngine()} (${code}): start one with ./scripts/setup or set DOCKER_HOST`,
      { cause: err },
    );
  }
  return new RuntimeError(`${doing}: ${engineMessage(err)}`, { cause: err });
}
