// The daemon's control socket against malformed and hostile requests: an answer or a closed
// connection, never the daemon's end (red-team finds: a request that made a method throw at
// once, and a line without end, took the agent down).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createConnection, type Server } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createControlServer, parseRequest } from '../../src/gateway/control.ts';
import { PROTOCOL_VERSION } from '../../src/daemon-client/protocol.ts';
import type { LocalSbx } from '../../src/api/local-sbx.ts';
import { DaemonClient, unixTransport } from '../../src/daemon-client/client.ts';
import { followNetworkLog, readNetworkLog } from '../../src/daemon-client/network-log.ts';
import { NotFoundError } from '../../src/core/errors.ts';
import type { LogEnd, NetworkLogEntry } from '../../src/core/network-log.ts';

function ask(path: string, text: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    let out = '';
    c.on('data', (d) => (out += d));
    c.on('error', () => resolve(out || 'closed'));
    c.on('close', () => resolve(out || 'closed'));
    c.write(text);
  });
}

describe('control server', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-ctl-'));
  const path = join(dir, 'c.sock');
  let server: Server;
  const calls: unknown[][] = [];
  const sbx = {
    blockNetwork: (...a: unknown[]) => {
      calls.push(a);
      return Promise.resolve({ mode: 'block-all' });
    },
    list: () => Promise.resolve([]),
  } as unknown as LocalSbx;
  before(async () => {
    server = createControlServer(sbx, { reload: async () => {}, health: () => ({ ok: true }), hello: () => ({ protocol: PROTOCOL_VERSION, version: 'x', pid: 1 }), listener: () => ({ host: '127.0.0.1', port: 1 }) });
    await new Promise<void>((r) => server.listen(path, () => r()));
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const line = (o: unknown) => JSON.stringify(o) + '\n';

  it('attack: arguments that cannot be made strings are refused, and the server lives on', async () => {
    const a = JSON.parse(await ask(path, line({ v: PROTOCOL_VERSION, op: 'call', payload: { method: 'blockNetwork', args: [{ toString: 1 }] } })));
    assert.equal(a.error.exitCode, 2);
    assert.match(a.error.message, /reference must be a string/);
    assert.equal(calls.length, 0);
    const ok = JSON.parse(await ask(path, line({ v: PROTOCOL_VERSION, op: 'call', payload: { method: 'list', args: [] } })));
    assert.deepEqual(ok.value, []);
  });

  it('attack: shapes that are not a request get a usage error', async () => {
    for (const bad of [line([1]), line({ v: PROTOCOL_VERSION }), line({ v: '2', op: 'hello' }), line({ v: PROTOCOL_VERSION, op: 'call', payload: { method: {} } }), 'not json\n']) {
      const a = JSON.parse(await ask(path, bad));
      assert.equal(a.error.exitCode, 2, bad);
    }
  });

  it('attack: methods outside the list (constructor, __proto__, internals) are refused', async () => {
    for (const method of ['constructor', '__proto__', 'enforceNetwork', 'exec', 'toString']) {
      const a = JSON.parse(await ask(path, line({ v: PROTOCOL_VERSION, op: 'call', payload: { method, args: [] } })));
      assert.match(a.error.message, /unknown library call/, method);
    }
  });

  it('attack: a line without end is cut at 1 MiB (the connection closes)', async () => {
    const a = await ask(path, Buffer.alloc(2 * 1024 * 1024, 'a'));
    assert.equal(a, 'closed');
    assert.equal(JSON.parse(await ask(path, line({ v: PROTOCOL_VERSION, op: 'health' }))).value.ok, true);
  });

  it('parseRequest: control', () => {
    assert.deepEqual(parseRequest(line({ v: 2, op: 'hello', payload: {} })), { v: 2, op: 'hello', payload: {} });
  });
});

describe('control server: the network log (netlog)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-ctl-log-'));
  const path = join(dir, 'c.sock');
  let server: Server;
  // A full ring of fat entries: about 3 MB, more than one control line may hold (1 MiB).
  const entry = (i: number): NetworkLogEntry => ({ time: new Date().toISOString(), source: 'dns', protocol: 'dns', name: `n${i}.${'x'.repeat(200)}.test`, verdict: 'allowed', rule: 'mode allow-all', type: 'A', answers: ['198.18.0.1'] });
  const ring = Array.from({ length: 10_000 }, (_, i) => entry(i));
  const followers = new Set<{ onEntry: (e: NetworkLogEntry) => void; onEnd: (why: LogEnd) => void }>();
  const sbx = {
    resolve: (ref: string) => {
      if (ref !== 'box') throw new NotFoundError(`no sandbox named ${ref}`);
      return { id: 'abc1234567', name: 'box' };
    },
  } as unknown as LocalSbx;
  before(async () => {
    server = createControlServer(sbx, {
      reload: async () => {},
      health: () => ({ ok: true }),
      hello: () => ({ protocol: PROTOCOL_VERSION, version: 'x', pid: 1 }),
      listener: () => ({ host: '127.0.0.1', port: 1 }),
      networkLog: () => ring,
      followLog: (_id, _filter, onEntry, onEnd) => {
        const f = { onEntry, onEnd };
        followers.add(f);
        return () => followers.delete(f);
      },
    });
    await new Promise<void>((r) => server.listen(path, () => r()));
  });
  after(() => {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const client = () => new DaemonClient(unixTransport(path));

  it('a full ring comes whole, an entry a line, named with its sandbox', async () => {
    const got = await readNetworkLog(client(), 'box', {});
    assert.equal(got.length, 10_000);
    assert.equal(got[9_999]!.name, ring[9_999]!.name);
    assert.equal(got[0]!.sandbox, 'box');
  });

  it('no such sandbox: exit 3', async () => {
    await assert.rejects(readNetworkLog(client(), 'nope', {}), (err: { exitCode?: number }) => err.exitCode === 3);
  });

  it('following: the backlog, new entries, and the end when the sandbox goes; an abort ends it quietly', async () => {
    const seen: string[] = [];
    const stop = new AbortController();
    const reading = (async () => {
      for await (const e of followNetworkLog(client(), 'box', {}, stop.signal)) seen.push(e.name!);
    })();
    while (followers.size === 0) await new Promise((r) => setTimeout(r, 10));
    for (const f of followers) f.onEntry(entry(-1));
    for (const f of followers) f.onEnd('removed');
    await reading;
    assert.equal(seen.length, 10_001);
    assert.equal(seen.at(-1), entry(-1).name);
    const aborted = (async () => {
      for await (const _ of followNetworkLog(client(), 'box', {}, stop.signal)) void _;
    })();
    stop.abort();
    await aborted;
  });

  it('a gateway that stops ends a follower with an error', async () => {
    await new Promise((r) => setTimeout(r, 100)); // the followers before are gone
    followers.clear();
    const reading = (async () => {
      for await (const _ of followNetworkLog(client(), 'box', {})) void _;
    })();
    while (followers.size === 0) await new Promise((r) => setTimeout(r, 10));
    for (const f of followers) f.onEnd('stopped');
    await assert.rejects(reading, /the gateway stopped/);
  });
});
