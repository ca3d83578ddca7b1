import { UsageError } from '../../core/errors.ts';
import { parsePort } from '../../core/ports.ts';
import type { CommandInput } from '../context.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';

function parseLocal(value: string | undefined, fallback: number): { host: string; port: number } {
  if (!value) return { host: '127.0.0.1', port: fallback };
  const m = /^(?:\[?([^\]]*?)\]?:)?(\d+)$/.exec(value);
  if (!m) throw new UsageError(`invalid --local "${value}": use PORT or ADDR:PORT, e.g. 5432 or 127.0.0.1:15432`);
  const port = Number(m[2]);
  if (port > 65535) throw new UsageError(`invalid --local port ${port}: use 0 to 65535`);
  return { host: m[1] || '127.0.0.1', port };
}

export async function run(input: CommandInput): Promise<number> {
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, 'sbx port forward SANDBOX PORT');
  if (input.args[1] === undefined) throw new UsageError('missing PORT argument: sbx port forward SANDBOX PORT [--local [ADDR:]PORT]');
  const port = parsePort(input.args[1] as string);
  const local = parseLocal(input.opts.local as string | undefined, port);
  const sbx = await input.sbx();
  const server = await sbx.forwardPort(ref, port, { host: local.host, localPort: local.port, onError: (m) => input.io.info(`error: ${m}`) });
  const addr = server.address();
  const shown = typeof addr === 'object' && addr ? `${addr.address}:${addr.port}` : String(addr);
  // The listening line goes to stdout so scripts can read the chosen port.
  input.io.out(`Forwarding ${shown} -> ${(await sbx.resolve(ref)).name}:${port}`);
  await new Promise<void>((resolve) => {
    const stop = () => server.close(() => resolve());
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}
