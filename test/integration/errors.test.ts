// Bad input: one-line errors, the documented exit codes, and nothing left behind.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { World } from '../helpers.ts';
import { LocalSbx as Sbx } from '../../src/api/local-sbx.ts';
import { RuntimeError } from '../../src/core/errors.ts';
import { Runtime } from '../../src/runtime/docker.ts';

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
    // More CPUs than the engine has: sbx's words, before Docker sees it.
    [['create', '--cpus', '999'], /^error: invalid --cpus 999: the Docker engine has \d+ CPUs?, so at most --cpus \d+$/m],
    [['create', '--cpus', '0.001'], /invalid CPU limit "0.001".*at least 0.01/],
    // Empty entries are mistakes (a variable that expanded to nothing, a doubled comma), not "no entry".
    [['create', '--allow-out', ''], /^error: --allow-out was given an empty value/],
    [['create', '--deny-out', ' '], /^error: --deny-out was given an empty value/],
    [['create', '--allow-port', ''], /^error: --allow-port was given an empty value/],
    [['create', '--allow-out', 'a.test,,b.test'], /^error: empty entry in --allow-out "a.test,,b.test": remove the extra comma/],
    [['create', '--deny-port', '25,'], /^error: empty entry in --deny-port "25,"/],
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
    // The engine refuses the container after the network exists (sbx now refuses the CPU counts
    // that used to provoke this, so the refusal is injected).
    class Refusing extends Runtime {
      override async createSandboxContainer(): Promise<void> {
        throw new RuntimeError('could not create container: refused by the test engine');
      }
    }
    await world.sbx(['gateway', 'start']); // this world's gateway (on a free port), not one from this process's env
    const sbx = new Sbx({ home: world.home, runtime: new Refusing() });
    await assert.rejects(sbx.create({ name: 'half' }), /could not create container: refused by the test engine/);
    await assertNothingLeft();
  });
});

describe('empty egress entries are refused by network update (exit 2, policy unchanged)', () => {
  it('names the flag and the empty entry; blank lines of an @FILE are fine', async () => {
    await world.json(['create', '--name', 'pol', '--allow-port', '443']);
    const file = join(world.home, 'entries.txt');
    const cases: Array<[string[], RegExp]> = [
      [['--allow-out', ''], /^error: --allow-out was given an empty value: name an entry, or leave --allow-out out$/m],
      [['--deny-out', ''], /^error: --deny-out was given an empty value/],
      [['--allow-port', ''], /^error: --allow-port was given an empty value/],
      [['--deny-port', '  '], /^error: --deny-port was given an empty value/],
      [['--allow-out', 'a.test,,b.test'], /^error: empty entry in --allow-out "a.test,,b.test": remove the extra comma$/m],
      [['--deny-out', ',x.test'], /^error: empty entry in --deny-out ",x.test"/],
      [['--allow-out', `@${file}`], /^error: empty entry in --allow-out .*entries.txt line 3 "c.test,,d.test"/],
    ];
    writeFileSync(file, 'a.test\n\nc.test,,d.test\n');
    for (const [flags, pattern] of cases) {
      await expectError(['network', 'update', 'pol', ...flags], 2, pattern);
      assert.deepEqual((await world.json(['network', 'show', 'pol'])).allowPorts, ['443'], `policy unchanged after ${flags.join(' ')}`);
    }
    writeFileSync(file, '# names\na.test\n\n   \nb.test, c.test\n');
    const policy = await world.json(['network', 'update', 'pol', '--allow-out', `@${file}`]);
    assert.deepEqual(policy.allowOut, ['a.test', 'b.test', 'c.test']);
    await world.sbx(['rm', '-f', 'pol']);
  });
});
