// sbx's rules live in nft tables that any root program may delete: a firewall reload runs `flush
// ruleset`, an admin cleans up. Every sandbox would then go unfiltered until the gateway next
// started. `nft monitor` tells the gateway at once, and it puts the rules back.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { diesWithParent } from './dies-with-parent.ts';

/** How long a monitor that died, or a listing that failed, waits before it tries again. */
const RETRY_MS = 1000;
/** Deletions this close together are looked at once (a `flush ruleset` deletes every table). */
const SETTLE_MS = 20;

export interface TableWatch {
  stop(): void;
}

/**
 * How a deletion counts: `always` (a table nobody but its users rewrites whole, such as sbx's
 * shared one, which another writer may re-create at once with nothing in it), or `if-absent` (a
 * table its owner replaces in one transaction, delete and add: gone only if it is not there).
 */
export type Deletion = 'always' | 'if-absent';

const nftBin = () => process.env.SBX_NFT ?? 'nft';

/** The tables there are now ("inet sbx", ...); undefined when nft cannot say. */
function listTables(): Promise<Set<string> | undefined> {
  return new Promise((resolve) => {
    execFile(nftBin(), ['list', 'tables'], (err, stdout) => {
      if (err) return resolve(undefined);
      resolve(new Set(stdout.split('\n').flatMap((l) => /^table (\S+ \S+)/.exec(l)?.[1] ?? [])));
    });
  });
}

/** Calls `onDeleted(table)` when one of `tables` ("inet sbx": how its deletion counts) was deleted. */
export function watchTables(tables: Readonly<Record<string, Deletion>>, onDeleted: (table: string) => void, log: (line: string) => void): TableWatch {
  let child: ChildProcess | undefined;
  let stopped = false;
  let restart: NodeJS.Timeout | undefined;
  let settle: NodeJS.Timeout | undefined;
  let failing = false;
  /** Deletions seen since the last look. */
  const seen = new Set<string>();

  const look = (ms: number) => {
    settle ??= setTimeout(() => void check(), ms);
  };
  const check = async () => {
    settle = undefined;
    const deleted = new Set(seen);
    seen.clear();
    const present = await listTables();
    if (stopped) return;
    if (!present) {
      for (const t of deleted) seen.add(t); // nft could not say: kept for the next look
      return look(RETRY_MS);
    }
    for (const [table, how] of Object.entries(tables)) {
      if (!present.has(table) || (how === 'always' && deleted.has(table))) onDeleted(table);
    }
  };

  const start = () => {
    const c = spawn(...diesWithParent(nftBin(), ['monitor', 'tables']), { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    let stderr = '';
    c.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-500)));
    c.on('error', () => {}); // 'close' follows: a restart below
    // Deletions before the monitor listened (at the start, or while it was down) are found by one look.
    c.once('spawn', () => look(200));
    createInterface({ input: c.stdout! }).on('line', (line) => {
      failing = false;
      const m = /^delete table (\S+ \S+)/.exec(line);
      if (m && m[1]! in tables) {
        seen.add(m[1]!);
        look(SETTLE_MS);
      }
    });
    c.on('close', (code, signal) => {
      if (stopped) return;
      // Said once per run of failures: a broken nft would otherwise fill the log every second.
      if (!failing) log(`egress: the watch on the nft tables ended (${code ?? signal}${stderr.trim() ? `: ${stderr.trim().split('\n').pop()}` : ''}): starting it again`);
      failing = true;
      // What was deleted and made again while nothing watched cannot be told: counted as deleted.
      for (const [table, how] of Object.entries(tables)) if (how === 'always') seen.add(table);
      restart = setTimeout(start, RETRY_MS);
      restart.unref();
    });
  };
  start();
  return {
    stop() {
      stopped = true;
      clearTimeout(restart);
      clearTimeout(settle);
      child?.kill();
    },
  };
}
