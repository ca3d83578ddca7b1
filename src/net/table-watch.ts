// sbx's rules live in nft tables that any root program may delete: a firewall reload runs `flush
// ruleset`, an admin cleans up. Every sandbox would then go unfiltered until the gateway next
// started. `nft monitor` tells the gateway at once, and it puts the rules back.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { diesWithParent } from './dies-with-parent.ts';

/** How long a monitor that died waits before it starts again. */
const RESTART_MS = 1000;
/** Deletions this close together are looked at once (a `flush ruleset` deletes every table). */
const SETTLE_MS = 20;

export interface TableWatch {
  stop(): void;
}

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

/**
 * Calls `onDeleted(table)` when one of `tables` ("inet sbx") has been deleted. A deletion that
 * the same transaction undoes (delete and add again, as sbx's listener guard does) is not one:
 * the tables are listed once the deletions settle.
 */
export function watchTables(tables: readonly string[], onDeleted: (table: string) => void, log: (line: string) => void): TableWatch {
  let child: ChildProcess | undefined;
  let stopped = false;
  let restart: NodeJS.Timeout | undefined;
  let settle: NodeJS.Timeout | undefined;
  let failing = false;

  const check = async () => {
    settle = undefined;
    const present = await listTables();
    if (!present || stopped) return;
    for (const t of tables) if (!present.has(t)) onDeleted(t);
  };

  const start = (again = false) => {
    // Deletions while no monitor ran are looked for once it runs.
    if (again) settle ??= setTimeout(() => void check(), 200);
    const c = spawn(...diesWithParent(nftBin(), ['monitor', 'tables']), { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    let stderr = '';
    c.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-500)));
    c.on('error', () => {}); // 'exit' follows, or nothing started: both end in a restart below
    createInterface({ input: c.stdout! }).on('line', (line) => {
      failing = false;
      const m = /^delete table (\S+ \S+)/.exec(line);
      if (m && tables.includes(m[1]!)) settle ??= setTimeout(() => void check(), SETTLE_MS);
    });
    c.on('close', (code, signal) => {
      if (stopped) return;
      // Said once per run of failures: a broken nft would otherwise fill the log every second.
      if (!failing) log(`egress: the watch on the nft tables ended (${code ?? signal}${stderr.trim() ? `: ${stderr.trim().split('\n').pop()}` : ''}): starting it again`);
      failing = true;
      restart = setTimeout(() => start(true), RESTART_MS);
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
