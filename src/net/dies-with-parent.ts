// Helpers that sbx's daemons start (nginx, nft monitor) must not outlive them, however they die
// (kill -9 included): util-linux's setpriv gives the child a parent-death signal.
import { existsSync } from 'node:fs';

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** The command and arguments that run `bin args` with SIGTERM on its parent's death (as is, without setpriv). */
export function diesWithParent(bin: string, args: string[]): [string, string[]] {
  return SETPRIV ? [SETPRIV, ['--pdeathsig', 'TERM', '--', bin, ...args]] : [bin, args];
}
