// sbx network check SANDBOX DEST[:PORT] [--udp] [--json]: would this connection pass now, and by
// which rule? Exit 0: allowed, 1: refused, 2: bad input.
import { UsageError } from '../../core/errors.ts';
import type { CommandInput } from '../context.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';

export async function run(input: CommandInput): Promise<number> {
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, 'sbx network check SANDBOX DEST[:PORT]');
  const dest = input.args[1] as string | undefined;
  if (!dest) throw new UsageError('no destination: sbx network check SANDBOX DEST[:PORT] (a name or an address; port 443 when none is given)');
  const sbx = await input.sbx();
  const c = await sbx.checkNetwork(ref, dest, { udp: !!input.opts.udp });
  const { io } = input;
  if (input.opts.json) io.json(c);
  else {
    const target = `${c.name ?? c.address}:${c.port}/${c.protocol}`;
    const verdict = c.verdict === 'allowed' ? io.color.green('allowed') : io.color.red('blocked');
    io.details([
      ['destination', target],
      ...(c.addresses ? [['resolves to', c.addresses.length ? c.addresses.join(', ') : '(nothing)'] as [string, string]] : []),
      ...(c.address && c.name ? [['address', c.address] as [string, string]] : []),
      ['decided by', c.path === 'dns' ? "sbx's DNS forwarder" : c.path === 'proxy' ? "sbx's Host/SNI proxy" : "the kernel's rules"],
      ['verdict', verdict],
      ['rule', c.rule],
    ]);
  }
  return c.verdict === 'allowed' ? 0 : 1;
}
