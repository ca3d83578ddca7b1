// The script `docker exec` runs in the agent to reach its control socket (PIPE_SCRIPT in
// src/api/agent-backend.ts), run here with this Node against sockets in a temp dir: it waits for a
// socket that is not there yet (an agent whose container runs before its daemon listens, as after
// an engine restart), hands the request over once, and gives up with one line when none comes.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The script waits as long as a client waits for a starting agent: short here.
process.env.SBX_AGENT_START_TIMEOUT_MS = '1500';
const { PIPE_SCRIPT } = await import('../../src/api/agent-backend.ts');

const dir = mkdtempSync(join(tmpdir(), 'sbx-pipe-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** Runs the script with `input` on stdin; resolves with its exit code, output and run time. */
function pipe(socket: string, input: string): Promise<{ code: number | null; out: string; err: string; ms: number }> {
  return new Promise((resolve) => {
    const began = Date.now();
    const p = spawn(process.execPath, ['-e', PIPE_SCRIPT], { env: { ...process.env, SBX_CONTROL_SOCKET: socket }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.stdin.end(input);
    p.on('exit', (code) => resolve({ code, out, err, ms: Date.now() - began }));
  });
}

/** A daemon that answers every request line with "got <line>" and closes, counting requests. */
function daemon(socket: string): { server: Server; requests: string[] } {
  const requests: string[] = [];
  const server = createServer((c) =>
    c.once('data', (d) => {
      requests.push(String(d));
      c.end(`got ${d}`);
    }),
  );
  server.listen(socket);
  return { server, requests };
}

describe('the agent pipe script', () => {
  it('a listening socket: the request goes through and the answer comes back (control)', async () => {
    const socket = join(dir, 'up.sock');
    const d = daemon(socket);
    const r = await pipe(socket, '{"op":"hello"}\n');
    d.server.close();
    assert.deepEqual([r.code, r.out, r.err], [0, 'got {"op":"hello"}\n', '']);
    assert.deepEqual(d.requests, ['{"op":"hello"}\n']);
  });

  it('a socket that appears later (the daemon still starting): it waits, then hands the request over once', async () => {
    const socket = join(dir, 'late.sock');
    let d: ReturnType<typeof daemon> | undefined;
    const later = setTimeout(() => (d = daemon(socket)), 500);
    const r = await pipe(socket, '{"op":"call"}\n');
    clearTimeout(later);
    d?.server.close();
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out, 'got {"op":"call"}\n');
    assert.ok(r.ms >= 500, `answered after ${r.ms} ms, before the socket existed`);
    assert.deepEqual(d?.requests, ['{"op":"call"}\n']);
  });

  it('no daemon within the limit: exit 1 with one line, after waiting about that long', async () => {
    const r = await pipe(join(dir, 'never.sock'), '{"op":"call"}\n');
    assert.equal(r.code, 1);
    assert.equal(r.out, '');
    assert.match(r.err, /^error: the control socket of the agent does not answer: connect ENOENT .*never\.sock\n$/);
    assert.ok(r.ms >= 1400 && r.ms < 5000, `gave up after ${r.ms} ms`);
  });
});
