// Which user the code that parses untrusted traffic runs as: the system user `sbx-gateway`
// (scripts/setup creates it) when the gateway runs as root, else the gateway's own user.
import { userInfo } from 'node:os';
import { GATEWAY_USER, gatewayAccount } from '../net/gateway-account.ts';

export { GATEWAY_USER, passwdEntry } from '../net/gateway-account.ts';

/**
 * The group the egress worker runs with: none of sbx-gateway's (the overflow gid, `nogroup`).
 * sbx-gateway's own group is for the gateway's nginx workers: only uid and group together may
 * open connections into sandboxes (nft-rules.ts, `output`) and reach the gateway's socket; a
 * worker with another group can do neither, and cannot trace the nginx workers either.
 */
export const NO_GROUP = 65534;

export interface ParserUser {
  name: string;
  uid: number;
  /** The user's own group (the egress worker itself runs with NO_GROUP). */
  gid: number;
  /** The gateway drops to this user (false: it is the gateway's own). */
  drop: boolean;
  /** Why the parsers run as the gateway's own user. */
  why?: string;
}

export function parserUser(options: { uid?: number; passwd?: string } = {}): ParserUser {
  const uid = options.uid ?? process.getuid?.() ?? -1;
  let own: string;
  try {
    own = userInfo().username;
  } catch {
    own = `uid ${uid}`;
  }
  const self = { name: own, uid, gid: process.getgid?.() ?? -1, drop: false };
  if (uid !== 0) return { ...self, why: 'the gateway does not run as root, so it cannot switch users' };
  const entry = gatewayAccount(options.passwd);
  if (!entry) return { ...self, why: `there is no ${GATEWAY_USER} user (scripts/setup creates it)` };
  return { name: GATEWAY_USER, ...entry, drop: true };
}
