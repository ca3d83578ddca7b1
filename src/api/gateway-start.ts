// Starting the background gateway when many sbx processes need it at once (8 parallel creates):
// one starts it while daemon.ts holds the start lock, the others wait for it, a bounded time. When
// that start fails, the waiters fail at once with its reason instead of each trying again in turn
// (and running out of lock retries with proper-lockfile's "Lock file is already being held").
import { accessSync, constants, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RuntimeError, SbxError } from '../core/errors.ts';
import { describeHome, homeError } from '../store/home.ts';
import { gatewayFiles, type GatewayState } from '../gateway/settings.ts';
import { runningGateway } from '../gateway/state.ts';

/** How long a process waits for another one's start of the gateway. */
export const GATEWAY_START_WAIT_MS = 60_000;

const failureFile = (home: string) => join(home, 'gateway.failed');

/** The reason of a start that failed since `since` (ms), if one did. */
function failureSince(home: string, since: number): string | undefined {
  try {
    const f = JSON.parse(readFileSync(failureFile(home), 'utf8')) as { at?: number; message?: string };
    return typeof f.at === 'number' && f.at >= since && f.message ? f.message : undefined;
  } catch {
    return undefined;
  }
}

export async function startGateway(home: string, ensure: (home: string) => Promise<GatewayState>, waitMs = GATEWAY_START_WAIT_MS): Promise<GatewayState> {
  const began = Date.now();
  const { lock, log } = gatewayFiles(home);
  const { default: lockfile } = await import('proper-lockfile');
  const stillLocked = () =>
    new RuntimeError(`the gateway of ${describeHome(home)} is being started by another sbx process, which has held ${lock} for over ${Math.round(waitMs / 1000)}s: see ${log}, then retry`);
  // The start writes its lock, log and sockets here: proper-lockfile would retry an unwritable
  // home for 20 s before it says so in its own words.
  try {
    accessSync(home, constants.W_OK);
  } catch (err) {
    throw homeError(home, err, 'start the gateway') ?? err;
  }
  const locked = () => lockfile.check(home, { lockfilePath: lock, realpath: false, stale: 15_000 }).catch(() => false);
  for (;;) {
    // Another process is starting it: wait until it runs, or its start failed.
    while (await locked()) {
      const running = runningGateway(home);
      if (running) return running;
      const failed = failureSince(home, began);
      if (failed) throw new RuntimeError(failed);
      if (Date.now() - began > waitMs) throw stillLocked();
      await new Promise((r) => setTimeout(r, 50));
    }
    try {
      const state = await ensure(home);
      rmSync(failureFile(home), { force: true });
      return state;
    } catch (err) {
      // Another process took the lock first and held it through daemon.ts's retries: wait again.
      if ((err as NodeJS.ErrnoException).code === 'ELOCKED') {
        if (Date.now() - began > waitMs) throw stillLocked();
        continue;
      }
      const e = homeError(home, err, 'start the gateway') ?? err;
      if (e instanceof SbxError) {
        try {
          writeFileSync(failureFile(home), JSON.stringify({ at: Date.now(), message: e.message }) + '\n', { mode: 0o600 });
        } catch {}
      }
      throw e;
    }
  }
}
