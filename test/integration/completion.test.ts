// Completion scripts work in a real bash, asking sbx for sandbox names and local images.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ROOT, run, World } from '../helpers.ts';

const world = new World();
after(() => world.cleanup());

/** What bash completes for a command line (the cursor at its end). */
async function complete(line: string): Promise<string[]> {
  const words = line.split(' ');
  const script = `source ${join(ROOT, 'completions', 'sbx.bash')}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); COMP_CWORD=${words.length - 1}
_sbx; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const r = await run('bash', ['-c', script], { env: { SBX_HOME: world.home, PATH: `${join(ROOT, 'bin')}:${process.env.PATH}` } });
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter(Boolean);
}

describe('bash completion', () => {
  it('completes commands', async () => {
    assert.deepEqual(await complete('sbx cr'), ['create']);
    assert.ok((await complete('sbx ')).includes('exec'));
    assert.ok(!(await complete('sbx ')).includes('__complete'), 'hidden command stays hidden');
  });
  it('completes flags of a command', async () => {
    assert.deepEqual(await complete('sbx rm --f'), ['--force']);
    assert.ok((await complete('sbx create --')).includes('--memory'));
  });
  it('completes subcommands', async () => {
    assert.deepEqual(await complete('sbx image b'), ['build']);
  });
  it('completes sandbox names from sbx itself', async () => {
    await world.json(['create', '--name', 'compl-one']);
    assert.deepEqual(await complete('sbx exec comp'), ['compl-one']);
    assert.deepEqual(await complete('sbx rm -f comp'), ['compl-one']);
  });
  it('completes --image from local images', async () => {
    assert.ok((await complete('sbx create --image sbx/')).includes('sbx/base:bookworm'));
  });
  it('completes shells for sbx completion', async () => {
    assert.deepEqual(await complete('sbx completion f'), ['fish']);
  });
  it('sbx completion prints the committed scripts', async () => {
    for (const [shell, file] of [['bash', 'sbx.bash'], ['zsh', '_sbx'], ['fish', 'sbx.fish']]) {
      const r = await world.sbx(['completion', shell!]);
      const { readFileSync } = await import('node:fs');
      assert.equal(r.stdout, readFileSync(join(ROOT, 'completions', file!), 'utf8'));
    }
  });
  it('the zsh and fish scripts parse', async () => {
    const fish = await run('sh', ['-c', 'command -v fish || echo none']);
    if (!fish.stdout.includes('none')) assert.equal((await run('fish', ['-n', join(ROOT, 'completions', 'sbx.fish')])).code, 0);
    const zsh = await run('sh', ['-c', 'command -v zsh || echo none']);
    if (!zsh.stdout.includes('none')) assert.equal((await run('zsh', ['-n', join(ROOT, 'completions', '_sbx')])).code, 0);
    assert.equal((await run('bash', ['-n', join(ROOT, 'completions', 'sbx.bash')])).code, 0);
  });
});
