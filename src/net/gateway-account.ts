// The unprivileged account of sbx's gateway (`sbx-gateway`, made by scripts/setup): its nginx
// workers run as it, and may open connections into sandboxes like the gateway itself (root).
import { readFileSync } from 'node:fs';

export const GATEWAY_USER = 'sbx-gateway';

export interface Account {
  uid: number;
  gid: number;
}

/** A user's uid and gid from passwd text (where `useradd --system` puts it). */
export function passwdEntry(name: string, text: string): Account | undefined {
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f[0] === name && f.length >= 7 && /^\d+$/.test(f[2]!) && /^\d+$/.test(f[3]!)) return { uid: Number(f[2]), gid: Number(f[3]) };
  }
  return undefined;
}

/** sbx-gateway's uid and gid, when it exists and is not root (read once per process). */
export function gatewayAccount(passwd = '/etc/passwd'): Account | undefined {
  if (cached.has(passwd)) return cached.get(passwd);
  let text = '';
  try {
    text = readFileSync(passwd, 'utf8');
  } catch {}
  const entry = passwdEntry(GATEWAY_USER, text);
  const account = entry && entry.uid !== 0 && entry.gid !== 0 ? entry : undefined;
  cached.set(passwd, account);
  return account;
}
const cached = new Map<string, Account | undefined>();

/** A group's name by gid (/etc/group), for configurations that take names (nginx's `user`). */
export function groupName(gid: number, file = '/etc/group'): string | undefined {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {}
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && f[2] === String(gid) && f[0]) return f[0];
  }
  return undefined;
}
