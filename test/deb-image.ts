// A test image: sbx's default image plus Debian packages, built offline. apt on this host downloads
// the packages (and what they need that the image lacks) from the mirror it already uses, and
// `docker build` installs them with dpkg: nothing is pulled, and the build runs with no network.
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { run } from './helpers.ts';

export async function buildDebImage(tag: string, base: string, packages: string[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-debs-'));
  try {
    // apt on this host works out what the image lacks from the image's own dpkg status, so what it
    // has (at whatever version) counts and an alternative it already meets is not pulled in.
    const status = await run('docker', ['run', '--rm', '--network', 'none', '--entrypoint', 'cat', base, '/var/lib/dpkg/status']);
    assert.equal(status.code, 0, status.stderr);
    writeFileSync(join(dir, 'status'), status.stdout);
    mkdirSync(join(dir, 'debs', 'partial'), { recursive: true });
    chmodSync(join(dir, 'debs'), 0o777); // apt downloads as _apt
    const got = await run('apt-get', ['install', '-q', '-y', '--download-only', '--no-install-recommends', '-o', `Dir::State::status=${join(dir, 'status')}`, '-o', `Dir::Cache::archives=${join(dir, 'debs')}`, ...packages], { timeoutMs: 300_000 });
    assert.equal(got.code, 0, `apt-get install --download-only ${packages.join(' ')}: ${got.stderr}`);
    assert.ok(readdirSync(join(dir, 'debs')).some((f) => f.endsWith('.deb')), 'no package was downloaded');
    rmSync(join(dir, 'debs', 'partial'), { recursive: true, force: true });
    rmSync(join(dir, 'debs', 'lock'), { force: true });
    writeFileSync(join(dir, 'Dockerfile'), `FROM ${base}\nCOPY debs/ /tmp/debs/\nRUN dpkg -i /tmp/debs/*.deb && rm -rf /tmp/debs\n`);
    const built = await run('docker', ['build', '-q', '--force-rm', '--network', 'none', '-t', tag, dir], { timeoutMs: 300_000 });
    assert.equal(built.code, 0, built.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
