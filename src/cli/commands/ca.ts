// `sbx ca`: the path on stdout (so `$(sbx ca)` is the file), how to trust it on stderr, for people.
import type { CommandInput } from '../context.ts';

export async function run(input: CommandInput): Promise<void> {
  const ca = await (await input.sbx()).ca();
  if (input.opts.json) return input.io.json(ca);
  input.io.out(ca.path);
  const c = input.io.errColor;
  input.io.info(`${ca.created ? 'made the' : 'the'} sbx certificate authority of this SBX_HOME: ${ca.subject}, until ${ca.notAfter.slice(0, 10)}, SHA-256 ${ca.sha256}`);
  input.io.info('HTTPS URLs (SBX_GATEWAY_TLS=1) carry certificates it signs. sbx installs it nowhere; to trust it:');
  for (const [where, how] of Object.entries(ca.trust)) input.io.info(`  ${c.bold(where.padEnd(9))} ${how}`);
}
