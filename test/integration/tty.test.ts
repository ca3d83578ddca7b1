// What people see on a terminal (run under a real pty with util-linux `script`): tables, colour
// that obeys NO_COLOR, and prompts only there.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { SBX, World } from '../helpers.ts';

const world = new World();
after(() => world.cleanup());

/** Runs sbx under a pty; `answers` are typed after a short pause (for prompts). */
function onTTY(args: string[], env: Record<string, string> = {}, answers?: string): Promise<{ code: number; out: string }> {
  const cmd = [SBX, ...args].map((a) => `'${a}'`).join(' ');
  return new Promise((done) => {
    const child = spawn('script', ['-qec', cmd, '/dev/null'], { env: { ...process.env, SBX_HOME: world.home, TERM: 'xterm-256color', ...env } });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    if (answers) setTimeout(() => child.stdin.write(answers), 1500);
    child.on('close', (code) => done({ code: code ?? 1, out }));
  });
}

describe('on a TTY', () => {
  it('ls prints a table with a header and colour', async () => {
    await world.json(['create', '--name', 'tty-box']);
    const { out } = await onTTY(['ls']);
    assert.match(out, /NAME.*ID.*IMAGE.*STATUS.*CREATED/);
    assert.match(out, /\x1b\[32mrunning/);
  });

  it('NO_COLOR turns colour off', async () => {
    const { out } = await onTTY(['ls'], { NO_COLOR: '1' });
    assert.match(out, /NAME/);
    assert.doesNotMatch(out, /\x1b\[3\dm/);
  });

  it('rm of a running sandbox asks, and "n" keeps it', async () => {
    const { out, code } = await onTTY(['rm', 'tty-box'], {}, 'n\r');
    assert.match(out, /Sandbox tty-box is running\. Remove it\?/);
    assert.equal(code, 2);
    assert.equal((await world.json(['inspect', 'tty-box'])).status, 'running');
  });

  it('rm of a running sandbox asks, and "y" removes it', async () => {
    const { out, code } = await onTTY(['rm', 'tty-box'], {}, 'y\r');
    assert.equal(code, 0, out);
    assert.match(out, /Removed tty-box/);
    assert.equal((await world.sbx(['inspect', 'tty-box'])).code, 3);
  });

  it('exec -t gives the command a terminal; without -t it has none', async () => {
    await world.json(['create', '--name', 'tty-exec']);
    assert.match((await onTTY(['exec', '-t', 'tty-exec', '--', 'tty'])).out, /\/dev\/pts\/\d+/);
    assert.match((await onTTY(['exec', 'tty-exec', '--', 'sh', '-c', 'tty || true'])).out, /not a tty/);
    await world.sbx(['rm', '-f', 'tty-exec']);
  });

  it('a missing SANDBOX argument becomes a picker', async () => {
    await world.json(['create', '--name', 'picked']);
    const { out, code } = await onTTY(['inspect'], {}, '\r');
    assert.match(out, /Which sandbox\?/);
    assert.equal(code, 0, out);
    assert.match(out.replace(/\x1b\[[0-9;]*[A-Za-z]/g, ""), /name\s+picked/);
  });
});
