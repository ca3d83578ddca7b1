// Reading `netlog` from the daemon (control.ts): the answer says how many entries follow, one
// JSON line each; a followed log then goes on, and ends with `{"end": why}` when its sandbox or
// the gateway goes. Shared by the host and agent backends.
import { RuntimeError } from '../core/errors.ts';
import type { LogEnd, NetworkLogEntry, NetworkLogQuery } from '../core/network-log.ts';
import type { DaemonClient } from './client.ts';

type Line = NetworkLogEntry | { end: LogEnd };

/** The log as it stands, every entry of it (or an error: never a part taken for the whole). */
export async function readNetworkLog(client: DaemonClient, ref: string, query: NetworkLogQuery, signal?: AbortSignal): Promise<NetworkLogEntry[]> {
  const { value, lines } = await client.follow<{ entries: number }, Line>('netlog', { ref, ...query }, signal);
  const out: NetworkLogEntry[] = [];
  for await (const line of lines) if (!('end' in line)) out.push(line);
  if (out.length !== value.entries) throw new RuntimeError(`the gateway sent ${out.length} of the log's ${value.entries} entries (it stopped meanwhile?)`);
  return out;
}

/**
 * The log as it stands, then each new entry, until `signal` aborts (the iterator then ends) or
 * the sandbox is removed (it ends too); a gateway that stops or cuts this reader off (it fell
 * too far behind) is an error.
 */
export async function* followNetworkLog(client: DaemonClient, ref: string, query: NetworkLogQuery, signal?: AbortSignal): AsyncGenerator<NetworkLogEntry> {
  let lines: AsyncIterable<Line>;
  try {
    ({ lines } = await client.follow<{ entries: number }, Line>('netlog', { ref, ...query, follow: true }, signal));
  } catch (err) {
    if (signal?.aborted) return; // stopped before the answer came
    throw err;
  }
  for await (const line of lines) {
    if (!('end' in line)) {
      yield line;
      continue;
    }
    if (line.end === 'removed') return;
    throw new RuntimeError('the gateway stopped, and its network log with it (the next sbx command starts it again)');
  }
  if (!signal?.aborted) throw new RuntimeError('the gateway stopped sending the log (it stopped, or this reader fell too far behind)');
}
