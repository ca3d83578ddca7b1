// A new user's path: setup's `sbx` link and the quickstart, run from the real scripts (setup's
// other steps are not run here: they install and build, and the quickstart gets a no-op setup).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, run, World } from '../helpers.ts';

const scratch = mkdtempSync(join(tmpdir(), 'sbx-scripts-'));
const world = new World();
after(async () => {
  await world.cleanup();
  rmSync(scratch, { recursive: true, force: true });
});

const ours = join(ROOT, 'bin', 'sbx');

/**
 * Runs step 7 of scripts/setup (putting sbx on PATH) as a user whose link directory is
 * HOME/.local/bin, with the shell PATH given.
 */
async function linkStep(home: string, userPath: string) {
  const setup = readFileSync(join(ROOT, 'scripts', 'setup'), 'utf8');
  const step7 = setup.slice(setup.indexOf('# 7. sbx on PATH'), setup.indexOf('ok "setup done'));
  assert.ok(step7.length > 0);
  const script = `set -euo pipefail; source ${JSON.stringify(join(ROOT, 'scripts', 'lib.sh'))}; id() { echo 1000; }\n${step7}`;
  return run('bash', ['-c', script], { env: { HOME: home, SBX_USER_PATH: userPath, NO_COLOR: '1' } });
}

function fresh(name: string): { home: string; dir: string; link: string } {
  const home = join(scratch, name);
  const dir = join(home, '.local', 'bin');
  mkdirSync(dir, { recursive: true });
  return { home, dir, link: join(dir, 'sbx') };
}

describe('setup puts sbx on PATH', () => {
  it('links it when there is no link', async () => {
    const { home, dir, link } = fresh('missing');
    const r = await linkStep(home, `${dir}:/usr/bin:/bin`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readlinkSync(link), ours);
    assert.match(r.stderr, new RegExp(`linked ${link} -> ${ours}`));
  });

  it('relinks a dangling link (its checkout, e.g. a CI clone, was deleted), and says so', async () => {
    const { home, dir, link } = fresh('dangling');
    symlinkSync('/nonexistent/deleted-clone/bin/sbx', link);
    const r = await linkStep(home, `${dir}:/usr/bin:/bin`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readlinkSync(link), ours);
    assert.match(r.stderr, /pointed to \/nonexistent\/deleted-clone\/bin\/sbx, which is gone/);
  });

  it('leaves a working link to another checkout alone, and says which sbx is used', async () => {
    const { home, dir, link } = fresh('working');
    const other = join(scratch, 'other-checkout-sbx');
    writeFileSync(other, '#!/bin/sh\necho other\n');
    chmodSync(other, 0o755);
    symlinkSync(other, link);
    const r = await linkStep(home, `${dir}:/usr/bin:/bin`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readlinkSync(link), other, 'the working link is untouched');
    assert.match(r.stderr, new RegExp(`${link} -> ${other} works: left alone \\(this checkout's is ${ours}; to use it instead: ln -sfn ${ours} ${link}\\)`));
  });

  it('leaves a file that is not a link alone, and warns when the link directory is not on PATH', async () => {
    const { home, link } = fresh('file');
    writeFileSync(link, '#!/bin/sh\n');
    chmodSync(link, 0o755);
    const r = await linkStep(home, '/usr/bin:/bin');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(lstatSync(link).isFile());
    assert.match(r.stderr, /warning: .*sbx is not a link \(left alone\)/);
    assert.match(r.stderr, /warning: .*\.local\/bin is not on your PATH/);
  });
});

describe('quickstart', () => {
  it('prints exactly the commands it runs', async () => {
    // The real quickstart and lib.sh, with a setup that does nothing (see above) and this sbx.
    const root = join(scratch, 'checkout');
    mkdirSync(join(root, 'scripts'), { recursive: true });
    mkdirSync(join(root, 'bin'));
    for (const f of ['quickstart', 'lib.sh']) copyFileSync(join(ROOT, 'scripts', f), join(root, 'scripts', f));
    writeFileSync(join(root, 'scripts', 'setup'), '#!/bin/sh\nexit 0\n');
    chmodSync(join(root, 'scripts', 'setup'), 0o755);
    symlinkSync(ours, join(root, 'bin', 'sbx'));
    const r = await run(join(root, 'scripts', 'quickstart'), [], { env: { ...world.env, SBX_HOME: world.home, NO_COLOR: '1' } });
    assert.equal(r.code, 0, r.stderr);
    const shown = [...r.stderr.matchAll(/^==> (.*)$/gm)].map((m) => m[1]!);
    const name = /sbx create --name (quickstart-\d+)/.exec(shown[0] ?? '')?.[1];
    assert.ok(name, r.stderr);
    assert.deepEqual(shown, [
      `sbx create --name ${name}`,
      `sbx exec ${name} -- python3 -c 'print("hello from the sandbox")'`,
      'sbx ls',
      `sbx rm --force ${name}`,
    ]);
    // What the exec step printed is what its command prints.
    assert.match(r.stdout, /^hello from the sandbox$/m);
    const again = await run('bash', ['-c', `${ours} create --name qs-check >/dev/null && ${ours} exec qs-check -- python3 -c 'print("hello from the sandbox")'; ${ours} rm -f qs-check >/dev/null`], { env: { ...world.env, SBX_HOME: world.home } });
    assert.equal(again.stdout, 'hello from the sandbox\n', again.stderr);
    assert.ok(!existsSync(join(world.home, 'sandboxes', name)));
  });
});

describe('bin/sbx and Node\'s compile cache', () => {
  it('keeps it in a directory of the user\'s own (HOME/.cache/sbx), never in the shared temp directory, and without a home of its own uses none', async () => {
    const home = join(scratch, 'cache-home');
    const shared = join(scratch, 'shared-tmp');
    mkdirSync(home, { recursive: true });
    mkdirSync(shared, { recursive: true, mode: 0o1777 });
    const env = { HOME: home, TMPDIR: shared, NODE_COMPILE_CACHE: '' };
    assert.equal((await run(ours, ['--version'], { env })).code, 0);
    assert.ok(existsSync(join(home, '.cache', 'sbx', 'node-compile-cache')), 'the cache in HOME');
    assert.deepEqual(readdirSync(shared), [], 'nothing in the temp directory');
    // A HOME that is not this user's (another user's, or a shared one): no cache at all.
    chmodSync(home, 0o755);
    const notOurs = join(scratch, 'not-ours');
    mkdirSync(notOurs, { recursive: true });
    await run('chown', ['65534:65534', notOurs]);
    assert.equal((await run(ours, ['--version'], { env: { ...env, HOME: notOurs } })).code, 0);
    assert.deepEqual(readdirSync(notOurs), [], 'nothing written in a home of another user');
    assert.deepEqual(readdirSync(shared), []);
  });
});

describe('the package', () => {
  it('lists only files that exist', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    for (const f of pkg.files as string[]) assert.ok(existsSync(join(ROOT, f)), `package.json files lists ${f}, which does not exist`);
    assert.ok((pkg.files as string[]).includes('bin') && (pkg.files as string[]).includes('dist'));
  });

  it('refuses a Node older than 22 in one line, before any dependency loads (control: this Node runs it)', async (t) => {
    const old = '/usr/bin/node';
    const major = existsSync(old) ? Number((await run(old, ['-p', 'process.versions.node.split(".")[0]'])).stdout.trim()) : 0;
    if (!(major > 0 && major < 22)) return t.skip(`no Node older than 22 at ${old}`);
    const r = await run(old, [join(ROOT, 'dist', 'cli.cjs'), 'ls']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: sbx needs Node >= 22, this is v\d+\.\d+\.\d+ \(\/usr\/bin\/node\): run scripts\/setup, which provisions it in \.tools\/, or put a newer node first on PATH\n$/);
    const ok = await run(process.execPath, [join(ROOT, 'dist', 'cli.cjs'), '--version']);
    assert.equal(ok.code, 0, ok.stderr);
  });

  it('packs into something that runs: sbx, its gateway relay, completions and types', async () => {
    const dest = mkdtempSync(join(scratch, 'pack-'));
    const packed = await run('npm', ['pack', '--silent', '--pack-destination', dest], { env: { npm_config_loglevel: 'error' } });
    assert.equal(packed.code, 0, packed.stderr);
    assert.equal((await run('tar', ['-xzf', join(dest, packed.stdout.trim()), '-C', dest])).code, 0);
    const pkg = join(dest, 'package');
    for (const f of ['bin/sbx', 'dist/cli.cjs', 'dist/relay.cjs', 'dist/index.js', 'dist/types/index.d.ts', 'completions/sbx.bash']) assert.ok(existsSync(join(pkg, f)), f);
    const version = await run(join(pkg, 'bin', 'sbx'), ['--version']);
    assert.equal(version.code, 0, version.stderr);
    assert.equal(version.stdout.trim(), JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version);
  });
});
