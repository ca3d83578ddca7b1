// The engine the docker CLI would use: DOCKER_HOST, else the current `docker context`
// (DOCKER_CONTEXT, else currentContext in the docker config), read from the CLI's own files. The
// context is turned into the DOCKER_HOST / DOCKER_TLS_VERIFY (or DOCKER_TLS) / DOCKER_CERT_PATH
// that engine-options.ts reads, so everything after sees one engine.
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../core/errors.ts';

export interface ContextEndpoint {
  name: string;
  host: string;
  /** DOCKER_CERT_PATH for it, when the context has TLS material. */
  certPath?: string;
  skipTlsVerify?: boolean;
}

/** The current context's endpoint, or undefined for the default engine (or when DOCKER_HOST is set). */
export function currentContext(env: NodeJS.ProcessEnv = process.env): ContextEndpoint | undefined {
  if (env.DOCKER_HOST) return undefined;
  const dir = env.DOCKER_CONFIG || join(homedir(), '.docker');
  let name = env.DOCKER_CONTEXT;
  if (!name) {
    try {
      name = (JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { currentContext?: string }).currentContext;
    } catch {
      return undefined;
    }
  }
  if (!name || name === 'default') return undefined;
  // node:crypto takes ~15 ms to load: only when a context is in use.
  const { createHash } = process.getBuiltinModule('node:crypto') as typeof import('node:crypto');
  const id = createHash('sha256').update(name).digest('hex');
  let meta: { Endpoints?: { docker?: { Host?: string; SkipTLSVerify?: boolean } } };
  try {
    meta = JSON.parse(readFileSync(join(dir, 'contexts', 'meta', id, 'meta.json'), 'utf8'));
  } catch {
    throw new UsageError(`docker context "${name}" (${env.DOCKER_CONTEXT ? 'DOCKER_CONTEXT' : `currentContext in ${join(dir, 'config.json')}`}) does not exist: docker context ls shows the ones there are`);
  }
  const host = meta.Endpoints?.docker?.Host;
  if (!host) throw new UsageError(`docker context "${name}" has no docker endpoint`);
  const tls = join(dir, 'contexts', 'tls', id, 'docker');
  return { name, host, ...(existsSync(join(tls, 'ca.pem')) || existsSync(join(tls, 'cert.pem')) ? { certPath: tls } : {}), ...(meta.Endpoints?.docker?.SkipTLSVerify ? { skipTlsVerify: true } : {}) };
}

/** Puts the current context into the environment as DOCKER_HOST and friends (once; DOCKER_HOST wins). */
export function applyDockerContext(env: NodeJS.ProcessEnv = process.env): ContextEndpoint | undefined {
  const ctx = currentContext(env);
  if (!ctx) return undefined;
  env.DOCKER_HOST = ctx.host;
  // The context alone says TLS, as for the docker CLI: the environment's TLS settings are not its.
  delete env.DOCKER_TLS_VERIFY;
  delete env.DOCKER_TLS;
  delete env.DOCKER_CERT_PATH;
  if (ctx.certPath) env.DOCKER_CERT_PATH = ctx.certPath;
  // TLS files mean TLS; SkipTLSVerify means TLS without checking the engine (DOCKER_TLS).
  if (ctx.skipTlsVerify) env.DOCKER_TLS = '1';
  else if (ctx.certPath) env.DOCKER_TLS_VERIFY = '1';
  return ctx;
}
