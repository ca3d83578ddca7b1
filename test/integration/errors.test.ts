// Bad input: one-line errors, the documented exit codes, and nothing left behind.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { World } from '../helpers.ts';

const world = new World();
after(() => world.cleanup());

async function expectError(args: string[], code: number, pattern: RegExp, env?: Record<string, string>) {
  const r = await world.sbx(args, { env });
  assert.equal(r.code, code, `sbx ${args.join(' ')}: ${r.stderr}`);
  assert.match(r.stderr, pattern);
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, `one line: ${r.stderr}`);
  assert.ok(r.stderr.startsWith('error: '));
  return r;
}

async function assertNothingLeft() {
  assert.deepEqual(await world.leftovers(), { containers: [], networks: [], tables: [] });
  assert.deepEqual(await world.json(['ls']), []);
}

describe('usage and validation errors exit 2 and create nothing', () => {
  const cases: Array<[string[], RegExp]> = [
    [['create', '--name', 'Bad_Name'], /invalid sandbox name "Bad_Name"/],
    [['create', '--memory', 'lots'], /invalid memory limit "lots"/],
    [['create', '--cpus', '-1'], /invalid CPU limit|unknown option|argument missing/],
    [['create', '--cpus', 'zero'], /invalid CPU limit "zero"/],
    [['create', '-e', 'NOPE'], /invalid environment variable "NOPE"/],
    [['create', '--image', 'Not An Image'], /invalid image reference/],
    [['create', '--bogus'], /unknown option '--bogus'/],
    [['frobnicate'], /unknown command 'frobnicate'/],
    [['ls', 'extra'], /too many arguments|excess/i],
    [['inspect'], /missing SANDBOX argument: sbx inspect SANDBOX/],
    [['stop'], /missing SANDBOX argument/],
    [['exec', 'x'], /no command given: put it after --/],
    [['completion', 'tcsh'], /unknown shell "tcsh": use one of bash, zsh, fish/],
    [['rm', 'x', '--', 'y'], /takes no command after "--"/],
  ];
  for (const [args, pattern] of cases) {
    it(`sbx ${args.join(' ')}`, async () => {
      const r = await world.sbx(args);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, pattern);
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
    });
  }
  it('left nothing behind', assertNothingLeft);
});

describe('not found exits 3', () => {
  for (const args of [['inspect', 'ghost'], ['stop', 'ghost'], ['exec', 'ghost', '--', 'true'], ['rm', 'ghost'], ['pause', 'ghost']]) {
    it(`sbx ${args.join(' ')}`, () => expectError(args, 3, /no sandbox named "ghost"/));
  }
});

describe('runtime failures exit 1 and create nothing', () => {
  it('an image that is absent and cannot be pulled', async () => {
    await expectError(['create', '--name', 'noimg', '--image', 'sbx-test/absent:never'], 1, /image sbx-test\/absent:never is not on this engine and could not be pulled/);
    await assertNothingLeft();
  });

  it('a duplicate name is refused and the first sandbox is untouched', async () => {
    const first = await world.json(['create', '--name', 'dup']);
    await expectError(['create', '--name', 'dup'], 2, /a sandbox named "dup" already exists/);
    const list = await world.json<any[]>(['ls']);
    assert.deepEqual(list.map((s) => s.id), [first.id]);
    assert.equal((await world.leftovers()).containers.length, 1);
    await world.sbx(['rm', '-f', 'dup']);
  });

  it('no engine answering is a clear runtime error', async () => {
    await world.json(['create', '--name', 'engine']);
    await expectError(['ls'], 1, /no Docker engine answers at unix:\/\/\/nonexistent\.sock/, { DOCKER_HOST: 'unix:///nonexistent.sock' });
    await world.sbx(['rm', '-f', 'engine']);
  });

  it('an engine failure half-way (container create refused) rolls back the network and store entry', async () => {
    // More CPUs than the machine has: valid for sbx, refused by the engine after the network exists.
    await expectError(['create', '--name', 'half', '--cpus', '512'], 1, /could not create container .*CPUs/);
    await assertNothingLeft();
  });
});
