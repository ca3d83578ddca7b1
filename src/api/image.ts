// Builds images without any registry: debootstrap of Debian bookworm from the mirror apt already
// uses, then `docker import` (the default sandbox image here, the agent's root in agent-image.ts).
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAptSources, pickMirror, type AptSource } from '../core/apt-sources.ts';
import { RuntimeError } from '../core/errors.ts';
import type { Runtime } from '../runtime/docker.ts';

export const BASE_SUITE = 'bookworm';
export const BASE_PACKAGES = ['python3', 'curl', 'ca-certificates', 'iproute2', 'procps', 'less'];
export const BASE_CHANGES = [
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  'ENV LANG=C.UTF-8',
  'WORKDIR /root',
  'CMD ["/bin/bash"]',
  'LABEL sbx.image=base',
];

export interface BuildImageOptions {
  tag: string;
  mirror?: string;
  onProgress?: (line: string) => void;
}

/** The mirror named by /etc/apt/sources.list and /etc/apt/sources.list.d/. */
export function systemMirror(suite = BASE_SUITE): string {
  const sources: AptSource[] = [];
  const read = (path: string, deb822: boolean) => {
    if (existsSync(path)) sources.push(...parseAptSources(readFileSync(path, 'utf8'), deb822));
  };
  read('/etc/apt/sources.list', false);
  const dir = '/etc/apt/sources.list.d';
  if (existsSync(dir)) {
    for (const f of readdirSync(dir).sort()) {
      if (f.endsWith('.sources')) read(join(dir, f), true);
      else if (f.endsWith('.list')) read(join(dir, f), false);
    }
  }
  const mirror = pickMirror(sources, suite);
  if (!mirror) throw new RuntimeError(`no apt source for Debian ${suite} in /etc/apt/sources.list(.d): pass --mirror URL`);
  return mirror;
}

export async function buildBaseImage(runtime: Runtime, options: BuildImageOptions): Promise<void> {
  await bootstrapImage(runtime, { ...options, packages: BASE_PACKAGES, changes: BASE_CHANGES });
}

export interface BootstrapOptions extends BuildImageOptions {
  /** Installed on top of debootstrap's minbase. */
  packages: readonly string[];
  /** Dockerfile instructions applied on import (ENV, LABEL, CMD...). */
  changes: readonly string[];
  /** Last touches to the root filesystem before it is imported (it runs as root). */
  prepare?: (root: string) => Promise<void>;
}

/**
 * debootstrap of Debian bookworm (minbase plus `packages`) into a temporary directory, then
 * `docker import` as `tag`: the one way sbx makes images without a registry.
 */
export async function bootstrapImage(runtime: Runtime, options: BootstrapOptions): Promise<void> {
  if (process.getuid?.() !== 0) throw new RuntimeError(`building ${options.tag} needs root (debootstrap): run it as root or through ./scripts/setup`);
  const debootstrap = ['/usr/sbin/debootstrap', '/usr/bin/debootstrap'].find(existsSync);
  if (!debootstrap) throw new RuntimeError('debootstrap is not installed: apt-get install debootstrap (./scripts/setup does this)');
  const mirror = options.mirror ?? systemMirror();
  const progress = options.onProgress ?? (() => {});
  // Loaded here, not with the CLI: an image build is rare, and execa is a tenth of the bundle.
  const { execa } = await import('execa');
  const root = await mkdtemp(join(tmpdir(), 'sbx-rootfs-'));
  try {
    progress(`debootstrap ${BASE_SUITE} (minbase + ${options.packages.join(', ')}) from ${mirror}`);
    const boot = execa(debootstrap, ['--variant=minbase', `--include=${options.packages.join(',')}`, BASE_SUITE, root, mirror], { all: true, buffer: { all: false } });
    boot.all?.setEncoding('utf8');
    let tail: string[] = [];
    boot.all?.on('data', (chunk: string) => {
      for (const line of chunk.split('\n').filter(Boolean)) {
        tail = [...tail.slice(-20), line];
        if (/^I: (Retrieving|Validating|Extracting|Installing|Configuring|Unpacking|Base system)/.test(line)) progress(line.slice(3));
      }
    });
    try {
      await boot;
    } catch (err) {
      throw new RuntimeError(`debootstrap failed (${(err as Error).message.split('\n')[0]}):\n${tail.join('\n')}`);
    }
    await options.prepare?.(root);
    // Package caches only make the image bigger.
    await execa('sh', ['-c', 'rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/*'], { cwd: root });
    progress(`importing the root filesystem as ${options.tag}`);
    const tar = execa('tar', ['--numeric-owner', '-C', root, '-c', '.'], { buffer: false });
    await Promise.all([runtime.importImage(tar.stdout!, options.tag, [...options.changes]), tar]);
    progress(`built ${options.tag}`);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}
