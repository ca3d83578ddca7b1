// Which user the code that parses untrusted traffic runs as: the system user `sbx-gateway`
// (scripts/setup creates it) when the gateway runs as root, else the gateway's own user.
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';

export const GATEWAY_USER = 'sbx-gateway';

export interface ParserUser {
  name: string;
  uid: number;
  gid: number;
  /** The gateway drops to this user (false: it is the gateway's own). */
  drop: boolean;
  /** Why the parsers run as the gateway's own user. */
  why?: string;
}

/** A user's uid and gid from /etc/passwd (where `useradd --system` puts it). */
export function passwdEntry(name: string, text: string): { uid: number; gid: number } | undefined {
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 7 && /^\d+$/.test(f[2]!) && /^\d+$/.test(f[3]!)) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  return undefined;
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
  let text = '';
  try {
    text = readFileSync(options.passwd ?? '/etc/passwd', 'utf8');
  } catch {}
  const entry = passwdEntry(GATEWAY_USER, text);
  if (!entry) return { ...self, why: `there is no ${GATEWAY_USER} user (scripts/setup creates it)` };
  if (entry.uid === 0 || entry.gid === 0) return { ...self, why: `${GATEWAY_USER} has uid or gid 0` };
  return { name: GATEWAY_USER, ...entry, drop: true };
}
