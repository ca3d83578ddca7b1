import { DEFAULT_IMAGE } from '../../api/sbx.ts';
import { validateImage } from '../../core/options.ts';
import type { CommandInput } from '../context.ts';
import type { IO } from '../io.ts';

interface Built {
  image: string;
  kind: 'base' | 'agent-root' | 'agent';
  built: boolean;
  seconds?: number;
}

/** The default sandbox image, the agent's root image and the agent image, each when missing. */
export async function run({ opts, io, sbx }: CommandInput): Promise<void> {
  const tag = validateImage((opts.tag as string | undefined) ?? DEFAULT_IMAGE);
  const mirror = opts.mirror as string | undefined;
  const force = Boolean(opts.force);
  const runtime = await (await sbx()).runtime();
  const { buildBaseImage } = await import('../../api/image.ts');
  const { AGENT_ROOT_IMAGE, agentBuildId, agentImageTag, buildAgentRootImage, ensureAgentImage } = await import('../../api/agent-image.ts');
  const images: Built[] = [];
  const step = async (image: string, kind: Built['kind'], build: (onProgress: (line: string) => void) => Promise<unknown>, rebuild = false) => {
    if (!force && !rebuild && (await runtime.imageExists(image))) {
      images.push({ image, kind, built: false });
      if (!opts.json) io.info(`${image} already exists (pass --force to rebuild)`);
      return;
    }
    const seconds = await withProgress(io, (onProgress) => build(onProgress));
    images.push({ image, kind, built: true, seconds });
    if (!opts.json) io.success(`built ${image} in ${seconds}s`);
  };
  await step(tag, 'base', (onProgress) => buildBaseImage(runtime, { tag, mirror, onProgress }));
  await step(AGENT_ROOT_IMAGE, 'agent-root', (onProgress) => buildAgentRootImage(runtime, { mirror, onProgress }));
  // A new root image needs a new top image, even when the build id is the same.
  const rootBuilt = images.at(-1)!.built;
  await step(agentImageTag(agentBuildId()), 'agent', (onProgress) => ensureAgentImage(runtime, { force: true, onProgress }), rootBuilt);
  if (opts.json) io.json({ images });
}

/** Runs a build with its progress on stderr (a spinner line on a terminal); its seconds. */
async function withProgress(io: IO, build: (onProgress: (line: string) => void) => Promise<unknown>): Promise<number> {
  const started = Date.now();
  const spin = io.isTTY ? ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'] : undefined;
  let frame = 0;
  await build((line) => {
    const secs = ((Date.now() - started) / 1000).toFixed(0).padStart(3);
    if (spin) io.stderr.write(`\r\x1b[K${io.errColor.cyan(spin[frame++ % spin.length] ?? '')} ${secs}s ${line.slice(0, (io.stderr.columns || 80) - 10)}`);
    else io.info(`[${secs}s] ${line}`);
  });
  if (spin) io.stderr.write('\r\x1b[K');
  return Number(((Date.now() - started) / 1000).toFixed(1));
}
