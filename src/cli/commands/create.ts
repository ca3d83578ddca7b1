import type { CommandInput } from '../context.ts';
import { printSandboxDetails } from '../render.ts';
import { policyInputFromOptions } from './network.ts';

export async function run({ opts, rest, io, sbx }: CommandInput): Promise<void> {
  const client = await sbx();
  // Ctrl-C (or a TERM) rolls the create back instead of leaving half a sandbox.
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const sandbox = await client.create({
      name: opts.name as string | undefined,
      image: opts.image as string | undefined,
      env: (opts.env as string[] | undefined) ?? [],
      memory: opts.memory as string | undefined,
      cpus: opts.cpus as string | undefined,
      pidsLimit: opts.pidsLimit as string | undefined,
      command: rest,
      ports: (opts.port as string[] | undefined) ?? [],
      private: !!opts.private,
      maskHost: opts.maskHost as string | undefined,
      ttl: opts.ttl as string | undefined,
      ipv6: !!opts.ipv6,
      network: policyInputFromOptions(opts, opts.blockNetwork || opts.internet === false ? 'block-all' : undefined),
      signal: abort.signal,
      onProgress: opts.json ? undefined : (line) => io.info(line),
    });
    if (opts.json) return io.json(sandbox);
    if (io.isTTY) io.success(`Created sandbox ${io.color.bold(sandbox.name)}`);
    printSandboxDetails(io, sandbox);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
