import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { bindLowPort, lowPortCandidates, preferredLowPorts, LOW_PORT_MAX, LOW_PORT_MIN } from '../../src/gateway/low-ports.ts';

describe('egress listener ports below 1024', () => {
  it('candidates are distinct, in 600-1023', () => {
    const c = lowPortCandidates(64);
    assert.equal(new Set(c).size, 64);
    for (const p of c) assert.ok(p >= LOW_PORT_MIN && p <= LOW_PORT_MAX, String(p));
  });

  it('a taken port is skipped; other errors are not', async () => {
    const tried: number[] = [];
    const port = await bindLowPort(async (p) => {
      tried.push(p);
      if (tried.length < 3) throw Object.assign(new Error('taken'), { code: 'EADDRINUSE' });
      return p;
    }, true);
    assert.equal(tried.length, 3);
    assert.equal(port, tried[2]);
    await assert.rejects(bindLowPort(async () => Promise.reject(Object.assign(new Error('x'), { code: 'EINVAL' })), true), /x/);
  });

  it("a home's preferred ports: the same at every start, three distinct ones in range, tried first", async () => {
    const a = preferredLowPorts('/home/a/.config/sbx');
    assert.deepEqual(a, preferredLowPorts('/home/a/.config/sbx'));
    assert.notDeepEqual(a, preferredLowPorts('/home/b/.config/sbx'));
    const ports = Object.values(a);
    assert.equal(new Set(ports).size, 3);
    assert.ok(ports.every((p) => p >= LOW_PORT_MIN && p <= LOW_PORT_MAX));
    assert.equal(await bindLowPort(async (p) => p, true, a.dns), a.dns);
    const taken = await bindLowPort(async (p) => {
      if (p === a.dns) throw Object.assign(new Error('in use'), { code: 'EADDRINUSE' });
      return p;
    }, true, a.dns);
    assert.notEqual(taken, a.dns, 'another when it is taken');
  });

  it('unprivileged: any free port (0)', async () => {
    assert.equal(await bindLowPort(async (p) => p, false), 0);
  });

  it('as root, a real bind gets a port below 1024', { skip: process.getuid?.() !== 0 && 'needs root' }, async () => {
    const server = createServer();
    const port = await bindLowPort((p) => new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(p, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
    }), true);
    server.close();
    assert.ok(port >= LOW_PORT_MIN && port <= LOW_PORT_MAX, String(port));
  });
});
