// sbx network log SANDBOX [--follow] [--since DURATION] [--blocked] [--json]: what the sandbox
// tried to reach, and why it was let through or not.
import type { NetworkLogEntry } from '../../core/network-log.ts';
import type { CommandInput } from '../context.ts';
import type { Palette } from '../io.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';

export const LOG_HEAD = ['TIME', 'SOURCE', 'PROTO', 'DESTINATION', 'NAME', 'VERDICT', 'RULE'];

/** Where an entry went: address:port ([v6]:port), or for a DNS query its answers. */
function destination(e: NetworkLogEntry): string {
  if (e.protocol === 'dns') return e.answers?.length ? e.answers.join(',') : '-';
  if (!e.address) return '-';
  const host = e.address.includes(':') ? `[${e.address}]` : e.address;
  return e.port !== undefined ? `${host}:${e.port}` : host;
}

export function logRow(e: NetworkLogEntry, c: Palette): string[] {
  const name = e.protocol === 'dns' ? `${e.name ?? '-'}${e.type ? ` (${e.type})` : ''}` : (e.name ?? '-');
  return [e.time, e.source, e.protocol, destination(e), name, e.verdict === 'blocked' ? c.red('blocked') : c.green('allowed'), e.rule];
}

export async function run(input: CommandInput): Promise<void> {
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, 'sbx network log SANDBOX');
  const sbx = await input.sbx();
  const { io, opts } = input;
  const options = { ...(opts.since !== undefined ? { since: String(opts.since) } : {}), ...(opts.blocked ? { blocked: true } : {}) };
  const print = (entries: NetworkLogEntry[]) => {
    if (opts.json) for (const e of entries) io.out(JSON.stringify(e));
    else if (!io.isTTY) for (const e of entries) io.out(logRow(e, io.color).join('\t'));
    else for (const e of entries) io.out(logRow(e, io.color).join('  '));
  };
  // On a terminal, say what the log cannot show (no kernel entries, or no log at all).
  const recorded = io.isTTY && !opts.json ? (await sbx.gatewayStatus()).networkLog : undefined;
  if (recorded && !recorded.startsWith('kernel')) io.info(`note: the network log records ${recorded}`);
  if (!opts.follow) {
    const entries = await sbx.networkLog(ref, options);
    if (opts.json || !io.isTTY) return print(entries);
    if (entries.length === 0) return io.info(`no entries${opts.blocked ? ' refused' : ''} for ${ref} yet`);
    return io.table(LOG_HEAD, entries.map((e) => logRow(e, io.color)));
  }
  // Until Ctrl-C (then exit 0), or until the sandbox is removed. `on`, not `once`: a library's
  // signal-exit handler re-raises the signal when it finds itself the only listener left.
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    if (io.isTTY && !opts.json) io.out(io.color.bold(LOG_HEAD.join('  ')));
    for await (const e of sbx.networkLog(ref, { ...options, follow: true, signal: stop.signal })) print([e]);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
