// Where ./scripts/setup builds nginx 1.26 (h2c beside HTTP/1.1 on one port): the gateway prefers it
// (gateway/nginx.ts), and the agent's image carries it to the same path (api/agent-image.ts).
import { statSync } from 'node:fs';
import { join } from 'node:path';

export const BUILT_NGINX_DIR = '/usr/local/lib/sbx/nginx';
/** Its binary, under BUILT_NGINX_DIR. */
export const BUILT_NGINX_BIN = 'sbin/nginx';
/** The Debian revision it was built from ("1.26.3-3+deb13u1"), written by setup after the build. */
export const BUILT_NGINX_STAMP = 'REVISION';
export const BUILT_NGINX = join(BUILT_NGINX_DIR, BUILT_NGINX_BIN);

/**
 * The built binary's size when only root can change it (root-owned, not group- or world-writable):
 * a root gateway runs it. Undefined when it is missing or anyone else could have replaced it.
 */
export function builtNginxSize(dir = BUILT_NGINX_DIR): number | undefined {
  try {
    const st = statSync(join(dir, BUILT_NGINX_BIN));
    return st.isFile() && st.uid === 0 && (st.mode & 0o022) === 0 ? st.size : undefined;
  } catch {
    return undefined;
  }
}
