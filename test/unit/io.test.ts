// The CLI's output styles: colour only where sbx decides (NO_COLOR, FORCE_COLOR, a terminal).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IO, palette } from '../../src/cli/io.ts';

const stream = (isTTY: boolean) => ({ isTTY, write: () => true }) as unknown as NodeJS.WriteStream;

test('palette: the same ANSI sequences as before (16 colours), plain text when off', () => {
  const on = palette(true);
  assert.equal(on.green('running'), '\x1b[32mrunning\x1b[39m');
  assert.equal(on.bold('x'), '\x1b[1mx\x1b[22m');
  assert.equal(on.dim('x'), '\x1b[2mx\x1b[22m');
  assert.equal(on.yellow('x'), '\x1b[33mx\x1b[39m');
  assert.equal(on.red('x'), '\x1b[31mx\x1b[39m');
  assert.equal(palette(false).green('running'), 'running');
  assert.equal(on.green(''), '', 'nothing to colour: no codes');
});

test('IO: colour on a terminal only; NO_COLOR wins, FORCE_COLOR=0 turns it off, TERM=dumb too', () => {
  const colored = (isTTY: boolean, env: NodeJS.ProcessEnv) => new IO(stream(isTTY), stream(isTTY), env).color.green('x') !== 'x';
  assert.equal(colored(true, {}), true);
  assert.equal(colored(false, {}), false, 'a pipe');
  assert.equal(colored(true, { NO_COLOR: '1' }), false);
  assert.equal(colored(true, { NO_COLOR: '1', FORCE_COLOR: '1' }), false, 'NO_COLOR wins');
  assert.equal(colored(false, { FORCE_COLOR: '1' }), true);
  assert.equal(colored(false, { FORCE_COLOR: '' }), true);
  assert.equal(colored(true, { FORCE_COLOR: '0' }), false);
  assert.equal(colored(true, { FORCE_COLOR: '00' }), false);
  assert.equal(colored(false, { FORCE_COLOR: 'true' }), true);
  assert.equal(colored(true, { TERM: 'dumb' }), false);
});
