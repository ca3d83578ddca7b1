// Where ./scripts/setup builds nginx 1.26 (h2c beside HTTP/1.1 on one port): the gateway prefers it
// (gateway/nginx.ts), and the agent's image carries it to the same path (api/agent-image.ts).
import { lstatSync } from 'node:fs';
import { dirname, join } from 'node:path';

export const BUILT_NGINX_DIR = '/usr/local/lib/sbx/nginx';
/** Its binary, under BUILT_NGINX_DIR. */
export const BUILT_NGINX_BIN = 'sbin/nginx';
/** The Debian revision it was built from ("1.26.3-3+deb13u1"), written by setup after the build. */
export const BUILT_NGINX_STAMP = 'REVISION';
export const BUILT_NGINX = join(BUILT_NGINX_DIR, BUILT_NGINX_BIN);

/** Root's, and nobody else may write it (no group or world write bit). */
const rootOnly = (st: { uid: number; mode: number }) => st.uid === 0 && (st.mode & 0o022) === 0;

/**
 * The built binary's size when only root can change it: a regular file (not a symlink) that is
 * root's and not group- or world-writable, in directories that are too, up to /. A root gateway
 * runs it, and the agent's image carries it. Undefined when it is missing or anyone else could
 * have replaced it (or a directory on its way).
 */
export function builtNginxSize(dir = BUILT_NGINX_DIR): number | undefined {
  try {
    const path = join(dir, BUILT_NGINX_BIN);
    const st = lstatSync(path);
    if (!st.isFile() || !rootOnly(st)) return undefined;
    for (let d = dirname(path); ; d = dirname(d)) {
      const ds = lstatSync(d);
      if (!ds.isDirectory() || !rootOnly(ds)) return undefined;
      if (d === dirname(d)) break;
    }
    return st.size;
  } catch {
    return undefined;
  }
}
