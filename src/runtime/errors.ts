// Turning dockerode / engine errors into sbx errors with a message for people.
import { RuntimeError } from '../core/errors.ts';

interface EngineError {
  statusCode?: number;
  code?: string;
  json?: { message?: string } | null;
  reason?: string;
  message?: string;
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

export function toRuntimeError(err: unknown, doing: string): RuntimeError {
  const code = (err as EngineError)?.code;
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
