import { DEFAULT_IMAGE } from '../../api/sbx.ts';
import { validateImage } from '../../core/options.ts';
import type { CommandInput } from '../context.ts';

export async function run({ opts, io, sbx }: CommandInput): Promise<void> {
  const tag = validateImage((opts.tag as string | undefined) ?? DEFAULT_IMAGE);
  const runtime = await (await sbx()).runtime();
  if (!opts.force && (await runtime.imageExists(tag))) {
    if (opts.json) return io.json({ image: tag, built: false });
    io.info(`${tag} already exists (pass --force to rebuild)`);
    return;
  }
  const { buildBaseImage } = await import('../../api/image.ts');
  const started = Date.now();
  const spin = io.isTTY ? ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'] : undefined;
  let frame = 0;
  await buildBaseImage(runtime, {
    tag,
    mirror: opts.mirror as string | undefined,
    onProgress: (line) => {
      const secs = ((Date.now() - started) / 1000).toFixed(0).padStart(3);
      if (spin) io.stderr.write(`\r\x1b[K${io.errColor.cyan(spin[frame++ % spin.length])} ${secs}s ${line.slice(0, (io.stderr.columns || 80) - 10)}`);
      else io.info(`[${secs}s] ${line}`);
    },
  });
  if (spin) io.stderr.write('\r\x1b[K');
  const seconds = Number(((Date.now() - started) / 1000).toFixed(1));
  if (opts.json) return io.json({ image: tag, built: true, seconds });
  io.success(`built ${tag} in ${seconds}s`);
}
