// Local users for tests that run sbx as someone else (a member of the docker group, an outsider).
// Each user carries the pid of the test process in its comment, so a killed run's users are swept.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { WorldUser } from './agent-world.ts';
import { run } from './helpers.ts';

const USER_PREFIX = 'sbxagt';
const COMMENT = /^sbx agent test (\d+)$/;

/** A user made by this process, in `groups`. */
export async function addUser(groups: string[]): Promise<WorldUser> {
  const name = `${USER_PREFIX}${randomBytes(3).toString('hex')}`;
  const r = await run('useradd', ['-m', '-s', '/bin/sh', '-c', `sbx agent test ${process.pid}`, ...(groups.length ? ['-G', groups.join(',')] : []), name]);
  assert.equal(r.code, 0, r.stderr);
  const id = (flag: string) => run('id', [flag, name]).then((x) => Number(x.stdout.trim()));
  return { name, uid: await id('-u'), gid: await id('-g'), home: `/home/${name}` };
}

/** The group that may use the engine's socket (docker, on Debian). */
export async function dockerGroup(socket = '/var/run/docker.sock'): Promise<string> {
  return (await run('getent', ['group', String(statSync(socket).gid)])).stdout.split(':')[0]!;
}

export async function removeUser(name: string): Promise<void> {
  // A process of that user would block userdel (none is left on the host: sbx runs in the agent).
  await run('pkill', ['-KILL', '-u', name]);
  await run('userdel', ['-r', name]);
}

/** Users a killed run left (their pid is gone). */
export async function sweepUsers(): Promise<void> {
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const [name, , , , comment] = line.split(':');
    const pid = COMMENT.exec(comment ?? '')?.[1];
    if (!name?.startsWith(USER_PREFIX) || !pid || existsSync(`/proc/${pid}`)) continue;
    await removeUser(name);
  }
}
