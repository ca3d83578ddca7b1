// sbx pool set N | sbx pool status
import type { CommandInput } from '../context.ts';
import type { PoolStatus } from '../../core/pool.ts';
import type { IO } from '../io.ts';
import { UsageError } from '../../core/errors.ts';

export async function run(input: CommandInput): Promise<void> {
  const { io, opts } = input;
  const verb = input.command.split(' ')[1];
  const sbx = await input.sbx();
  if (verb === 'set') {
    const size = input.args[0] as string | undefined;
    if (size === undefined) throw new UsageError('no size given: sbx pool set N (a whole number, 0 turns the pool off)');
    const status = await sbx.setPool(size);
    if (opts.json) return io.json(status);
    if (io.isTTY) io.success(status.size === 0 ? 'Warm pool off' : `Warm pool size ${status.size} (refilled in the background)`);
    return print(io, status);
  }
  const status = await sbx.poolStatus();
  if (opts.json) return io.json(status);
  print(io, status);
}

function print(io: IO, s: PoolStatus): void {
  io.details([
    ['size', s.size === 0 ? (io.isTTY ? '0 (off)' : '0') : String(s.size)],
    ['ready', String(s.ready)],
    ['creating', String(s.creating)],
    ['removing', String(s.removing)],
    ...(s.error ? [['last error', `${s.error.at} ${s.error.message}`] as [string, string]] : []),
  ]);
}
