// Targets picks the way into a sandbox's port: the bridge address, else the in-sandbox relay (for
// loopback-only servers). Real sockets on this host's loopback stand in for both: the bridge address
// is 127.0.0.1, and the fake relay hands a connection to a server of its own.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { Targets } from '../../src/gateway/targets.ts';
import { relayAnswer, type Relays } from '../../src/gateway/relays.ts';

const servers: Server[] = [];
after(() => servers.forEach((s) => s.close()));

/** A server on 127.0.0.1 (port 0: any) that greets each connection with `name`; its closed connections are counted. */
async function greeter(name: string, port = 0): Promise<{ port: number; closed: () => number }> {
  let closed = 0;
  const server = createServer((sock) => {
    sock.on('close', () => closed++);
    sock.on('error', () => {});
    sock.write(`${name}\n`);
  });
  servers.push(server);
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as { port: number }).port, closed: () => closed };
}

async function freePort(): Promise<number> {
  const s = createServer().listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  s.close();
  await once(s, 'close');
  return port;
}

async function greeting(sock: Socket): Promise<string> {
  const [chunk] = (await once(sock, 'data', { signal: AbortSignal.timeout(5000) })) as [Buffer]; // lost bytes: a failure, not a hang
  sock.destroy();
  return chunk.toString().trim();
}

/**
 * Targets over a running sandbox at 127.0.0.1 whose relay runs `onRelay` and then connects to the
 * relay's server, reading its answer line as Relays does (relayAnswer).
 */
function targets(relayPort: number, onRelay: () => Promise<void> = async () => {}): Targets {
  const runtime = { inspectContainer: async () => ({ state: 'running', ip: '127.0.0.1', pid: 1 }) };
  const relays = {
    connect: async () => {
      await onRelay();
      return relayAnswer(createConnection({ host: '127.0.0.1', port: relayPort }));
    },
  } as unknown as Relays;
  return new Targets({} as never, runtime as never, relays);
}

/** A stand-in for the relay and the loopback-only server behind it: "OK", then `name` (later by `laterMs`, or in the same write). */
async function relayServer(name: string, laterMs?: number): Promise<{ port: number; closed: () => number }> {
  let closed = 0;
  const server = createServer((sock) => {
    sock.on('close', () => closed++);
    sock.on('error', () => {});
    if (laterMs === undefined) sock.write(`OK\n${name}\n`);
    else {
      sock.write('OK\n');
      setTimeout(() => sock.write(`${name}\n`), laterMs);
    }
  });
  servers.push(server);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as { port: number }).port, closed: () => closed };
}

const record = { id: 'x', name: 'box' } as never;

describe('the way into a sandbox port', () => {
  it('a server on the bridge address: straight there, no relay', async () => {
    const bridge = await greeter('bridge');
    const relay = await relayServer('relay');
    assert.equal(await greeting(await targets(relay.port).connect(record, bridge.port)), 'bridge');
  });

  it('a loopback-only server (the bridge address refuses, twice): through the relay', async () => {
    const relay = await relayServer('relay');
    assert.equal(await greeting(await targets(relay.port).connect(record, await freePort())), 'relay');
  });

  it('a server that starts listening on every address between the two tries: the bridge, and the relay\'s connection is closed (it would hold a one-connection server)', async () => {
    const relay = await relayServer('relay');
    const port = await freePort();
    const t = targets(relay.port, async () => void (await greeter('bridge', port)));
    assert.equal(await greeting(await t.connect(record, port)), 'bridge');
    for (let i = 0; i < 50 && relay.closed() === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(relay.closed(), 1, "the relay's connection was closed");
  });

  it('a loopback-only server that speaks first (SSH, SMTP): its greeting is kept until the caller reads, in the relay\'s answer or after it', async () => {
    for (const laterMs of [undefined, 20]) {
      const relay = await relayServer('220 banner', laterMs);
      const sock = await targets(relay.port).connect(record, await freePort());
      await new Promise((r) => setTimeout(r, 150)); // nobody reads yet (the gateway is busy elsewhere)
      assert.equal(await greeting(sock), '220 banner', `greeting ${laterMs === undefined ? 'with the answer' : `${laterMs} ms after it`}`);
    }
  });

  it("the relay's refusal is the upstream error it names", async () => {
    const server = createServer((sock) => sock.end('ERR ECONNREFUSED\n'));
    servers.push(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    await assert.rejects(relayAnswer(createConnection({ host: '127.0.0.1', port: (server.address() as { port: number }).port })), (e: Error & { code?: string }) => e.code === 'ECONNREFUSED');
  });
});
