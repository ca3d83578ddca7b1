// sbx against engines reached over TCP, as a remote host is: a dockerd in a network namespace of
// its own (test/remote-engine.ts) listening on tcp://<its address>:2376 with --tlsverify (a CA,
// server and client certificates made by openssl), and another on plain tcp://...:2375. The
// client has only DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (or a docker context); the
// agent on each engine does the privileged work. Each attack beside a control that must pass:
// create/exec/ls/rm, --block-network proven by packets to the fake internet, fetch and port
// forward through the agent's tunnel over TLS; a client whose TLS does not check out (no client
// certificate, another CA, no files, TLS against the plain port, plain against the TLS port) exits
// 1 with one line naming the engine, and nothing is made. Run under flock /tmp/sbx-fi.lock.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentWorld } from '../agent-world.ts';
import { eventually, run, type Result, talk } from '../helpers.ts';
import { startFakeInternet, type FakeInternet } from '../fake-internet.ts';
import { loadImages, remoteEngineLeftovers, startRemoteEngine, type RemoteEngine } from '../remote-engine.ts';
import { makeTlsCerts } from '../tls-certs.ts';

let fi: FakeInternet;
let tls: RemoteEngine;
let plain: RemoteEngine;
let world: AgentWorld;
let plainWorld: AgentWorld;
/** Client-side files of this test: another CA's certificates, a CA-only dir, docker configs. */
const scratch = mkdtempSync(join(tmpdir(), 'sbx-tls-test-'));
let cleaned = false;

async function teardown(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  await world?.cleanup();
  await plainWorld?.cleanup();
  await tls?.close();
  await plain?.close();
  await fi?.stop();
  rmSync(scratch, { recursive: true, force: true });
}

/** An agent world on `engine`: the agent mounts the engine's own socket (not /var/run/docker.sock's). */
function worldOn(engine: RemoteEngine, env: Record<string, string> = {}): AgentWorld {
  return new AgentWorld(
    { SBX_DNS_UPSTREAM: fi.dnsUpstream, SBX_GATEWAY_PORT: '7070', SBX_AGENT_ENGINE_SOCKET: engine.socket, ...env },
    { dockerHost: engine.tcpHost, netns: engine.netns },
  );
}

before(async () => {
  fi = await startFakeInternet();
  [tls, plain] = await Promise.all([startRemoteEngine({ tcp: { tls: true } }), startRemoteEngine({ tcp: { tls: false } })]);
  await Promise.all([tls, plain].map((e) => loadImages(e, ['sbx/base:bookworm', 'sbx/agent-root:bookworm-2'])));
  world = worldOn(tls, { DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: tls.certPath! });
  plainWorld = worldOn(plain);
});
after(teardown);

// ---- helpers ------------------------------------------------------------------------------

const lines = (s: string) => s.split('\n').filter(Boolean);
/** docker on an engine's own unix socket: what is there, whatever a TCP client could do. */
const onEngine = (engine: RemoteEngine, ...args: string[]) => run('docker', ['-H', engine.dockerHost, ...args]);

/** Every container, network and volume on the engine but its built-in networks. */
async function everything(engine: RemoteEngine): Promise<{ containers: string[]; networks: string[]; volumes: string[] }> {
  const c = await onEngine(engine, 'ps', '-aq');
  const n = await onEngine(engine, 'network', 'ls', '--format', '{{.Name}}');
  const v = await onEngine(engine, 'volume', 'ls', '-q');
  return { containers: lines(c.stdout), networks: lines(n.stdout).filter((x) => !['bridge', 'host', 'none'].includes(x)), volumes: lines(v.stdout) };
}

/** The one error line of a failed sbx call: exit 1, naming the engine. */
function oneErrorLine(r: Result, engine: string): string {
  assert.equal(r.code, 1, `exit ${r.code}: ${r.stdout}${r.stderr}`);
  const text = r.stderr.trim();
  assert.equal(text.split('\n').length, 1, `one line, got:\n${text}`);
  assert.match(text, /^error: /);
  assert.ok(text.includes(engine), `the line names ${engine}: ${text}`);
  assert.equal(r.stdout, '');
  return text;
}

async function sh(w: AgentWorld, box: string, script: string): Promise<string> {
  const r = await w.sbx(['exec', box, '--', 'sh', '-c', script]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trim();
}

/** A TCP connect from inside (probe.py): 'ok' or 'fail'; a refusal must be fast, not a timeout. */
async function tcp(w: AgentWorld, box: string, host: string, port: number): Promise<'ok' | 'fail'> {
  const line = await sh(w, box, `python3 /probe.py connect ${host} ${port}`);
  assert.match(line, /^(ok|fail \S+) \d+$/, `probe said "${line}"`);
  const [v, ...rest] = line.split(' ');
  assert.ok(Number(rest[rest.length - 1]) < 2000, `connect ${host}:${port} took too long: ${line}`);
  if (v === 'fail') assert.notEqual(rest[0], 'TIMEOUT', `${host}:${port} timed out instead of being refused`);
  return v as 'ok' | 'fail';
}


// ---- the tests ----------------------------------------------------------------------------

describe('fail closed: TLS that does not check out makes nothing', () => {
  let other = '';
  let caOnly = '';
  before(() => {
    other = makeTlsCerts(join(scratch, 'other'), tls.hostAddress).clientDir;
    caOnly = join(scratch, 'ca-only');
    mkdirSync(caOnly);
    copyFileSync(join(tls.certPath!, 'ca.pem'), join(caOnly, 'ca.pem'));
  });

  const attacks: Array<[string, () => { engine: () => RemoteEngine; env: Record<string, string> }, RegExp]> = [
    ['no client certificate (DOCKER_CERT_PATH holds ca.pem only)', () => ({ engine: () => tls, env: { DOCKER_CERT_PATH: caOnly } }), /refused this client's TLS certificate .*has no cert\.pem and key\.pem/],
    ["another CA's files (the engine's certificate is not trusted)", () => ({ engine: () => tls, env: { DOCKER_CERT_PATH: other } }), /has a certificate that .*\/ca\.pem did not sign \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\)/],
    ['DOCKER_CERT_PATH with no files', () => ({ engine: () => tls, env: { DOCKER_CERT_PATH: join(scratch, 'nothing') } }), /could not read .*\/nothing\/ca\.pem \(ENOENT\)/],
    ['no TLS against the TLS port', () => ({ engine: () => tls, env: { DOCKER_TLS_VERIFY: '', DOCKER_CERT_PATH: '' } }), /wants TLS: set DOCKER_TLS_VERIFY=1/],
    ['DOCKER_TLS_VERIFY=1 against the plain port', () => ({ engine: () => plain, env: { DOCKER_HOST: plain.tcpHost!, DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: tls.certPath! } }), /does not speak TLS/],
  ];
  for (const [what, setup, expected] of attacks) {
    it(`${what}: create --block-network exits 1 with one line naming the engine`, async () => {
      const { engine, env } = setup();
      const e = engine();
      const before = await everything(e);
      const r = await world.sbx(['create', '--block-network', '--name', 'nope'], { env });
      assert.match(oneErrorLine(r, e.tcpHost!), expected);
      assert.deepEqual(await everything(e), before, 'something was made on the engine');
    });
  }

  it('control: the right files, and DOCKER_TLS_VERIFY=true (any non-empty value, as the docker CLI): the same create works', async (t) => {
    const began = performance.now();
    const box = await world.json(['create', '--name', 'locked', '--block-network'], { env: { DOCKER_TLS_VERIFY: 'true' } });
    t.diagnostic(`first create over TLS (agent image built and started on the engine): ${Math.round(performance.now() - began)} ms`);
    assert.equal(box.network.mode, 'block-all');
    assert.equal(box.status, 'running');
    // Made there: its container and network, the agent and its volume.
    const there = await everything(tls);
    assert.ok(there.containers.length >= 2 && there.volumes.includes(world.names.volume), JSON.stringify(there));
    await world.put('locked', 'probe.py', '/probe.py');
  });
});

describe('over TLS', () => {
  it('create, exec, ls, rm', async () => {
    await world.json(['create', '--name', 'open', '-p', '8080']);
    await world.put('open', 'probe.py', '/probe.py');
    await world.json(['create', '--name', 'gone']);
    assert.equal(await sh(world, 'open', 'echo hello from $(hostname)'), 'hello from open');
    const list = await world.json<any[]>(['ls']);
    assert.deepEqual(list.map((b) => [b.name, b.status]).sort(), [['gone', 'running'], ['locked', 'running'], ['open', 'running']]);
    const rm = await world.sbx(['rm', '--force', 'gone']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.deepEqual((await world.json<any[]>(['ls'])).map((b) => b.name).sort(), ['locked', 'open']);
    // The engine agrees: what the client said is there, on the engine.
    const names = lines((await onEngine(tls, 'ps', '--filter', 'label=sbx.id', '--format', '{{.Names}}')).stdout);
    assert.equal(names.length, 2, names.join(', '));
  });

  it('--block-network: a TCP connect to a fake-internet host fails fast; control: allow-all reaches it', async () => {
    assert.equal(await tcp(world, 'open', '198.18.0.1', 80), 'ok');
    assert.equal(await tcp(world, 'locked', '198.18.0.1', 80), 'fail');
    assert.equal(await tcp(world, 'open', '198.18.0.3', 7000), 'ok');
    assert.equal(await tcp(world, 'locked', '198.18.0.3', 7000), 'fail');
  });

  it('sbx fetch and sbx port forward through the agent, over TLS', async () => {
    await world.sbx(['exec', '-d', 'open', '--', 'python3', '-m', 'http.server', '8080']);
    await eventually(async () => (await world.sbx(['fetch', 'open', '8080'])).code === 0, "open's server through the agent");
    const got = await world.sbx(['fetch', 'open', '8080', '/', '-i']);
    assert.equal(got.code, 0, got.stderr);
    assert.match(got.stdout, /^HTTP\/1\.1 200 OK\n[\s\S]*Directory listing/);
    await world.put('open', 'tcp_upper.py', '/srv/upper.py');
    await world.sbx(['exec', '-d', 'open', '--', 'python3', '/srv/upper.py', '5432']);
    const { child, localPort } = await world.forward('open', 5432);
    try {
      let answer = '';
      await eventually(async () => (answer = await talk(localPort, 'over tls\n').catch(() => '')) !== '', 'the tunnel');
      assert.equal(answer, 'OVER TLS\n');
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      assert.equal(await exited, 0);
    }
  });
});

describe('a docker context with TLS files', () => {
  let config = '';
  /** The world's calls through a context only: no DOCKER_HOST or TLS variables of their own. */
  const viaContext = (name: string) => ({ DOCKER_HOST: '', DOCKER_TLS_VERIFY: '', DOCKER_CERT_PATH: '', DOCKER_CONFIG: config, DOCKER_CONTEXT: name });
  before(async () => {
    config = join(scratch, 'docker-config');
    mkdirSync(config);
    const files = (dir: string, client: boolean) => `host=${tls.tcpHost},ca=${join(dir, 'ca.pem')}${client ? `,cert=${join(dir, 'cert.pem')},key=${join(dir, 'key.pem')}` : ''}`;
    for (const [name, spec] of [['sbx-tls', files(tls.certPath!, true)], ['sbx-tls-noclient', files(tls.certPath!, false)]]) {
      const r = await run('docker', ['context', 'create', name!, '--docker', spec!], { env: { DOCKER_CONFIG: config } });
      assert.equal(r.code, 0, r.stderr);
    }
  });

  it('is followed with TLS: ls and exec reach the same agent and sandboxes', async () => {
    const list = await world.json<any[]>(['ls'], { env: viaContext('sbx-tls') });
    assert.deepEqual(list.map((b) => b.name).sort(), ['locked', 'open']);
    const r = await world.sbx(['exec', 'open', '--', 'echo', 'via context'], { env: viaContext('sbx-tls') });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'via context');
  });

  it('attack: a context without the client certificate exits 1 with one line naming the engine, and makes nothing', async () => {
    const before = await everything(tls);
    const r = await world.sbx(['create', '--name', 'nope'], { env: viaContext('sbx-tls-noclient') });
    assert.match(oneErrorLine(r, tls.tcpHost!), /refused this client's TLS certificate/);
    assert.deepEqual(await everything(tls), before);
  });
});

describe('plain tcp://', () => {
  it('create, exec, ls, rm; --block-network refused, allow-all reaches the fake internet (control)', async (t) => {
    const began = performance.now();
    await plainWorld.json(['create', '--name', 'locked', '--block-network']);
    t.diagnostic(`first create over plain TCP (agent image built on the engine): ${Math.round(performance.now() - began)} ms`);
    await plainWorld.json(['create', '--name', 'open']);
    for (const box of ['locked', 'open']) await plainWorld.put(box, 'probe.py', '/probe.py');
    assert.equal(await tcp(plainWorld, 'open', '198.18.0.1', 80), 'ok');
    assert.equal(await tcp(plainWorld, 'locked', '198.18.0.1', 80), 'fail');
    assert.deepEqual((await plainWorld.json<any[]>(['ls'])).map((b) => b.name).sort(), ['locked', 'open']);
    assert.equal((await plainWorld.sbx(['rm', '--force', 'locked'])).code, 0);
    assert.deepEqual((await plainWorld.json<any[]>(['ls'])).map((b) => b.name), ['open']);
  });

  it('DOCKER_CERT_PATH alone (no DOCKER_TLS_VERIFY) stays plain and its files are not read, as for the docker CLI', async () => {
    const r = await plainWorld.sbx(['ls', '--json'], { env: { DOCKER_CERT_PATH: join(scratch, 'nothing') } });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).map((b: any) => b.name), ['open']);
  });
});

describe('the test bed', () => {
  it('leaves nothing: no sbxre-* namespace, dockerd, firewall rule or veth; no homes, certificates or docker configs', async () => {
    const homes = [world.home, plainWorld.home];
    const dirs = [tls.certPath!, scratch];
    // Only this file's engines: another test process may run one of its own meanwhile.
    const tags = [tls, plain].map((e) => e.netns.slice('sbxre-'.length));
    const ours = (s: string) => tags.some((t) => s.includes(`sbxre-${t}`) || s.includes(`sbxre${t}`));
    await teardown();
    const left = remoteEngineLeftovers();
    assert.deepEqual([...left.netns, ...left.firewall, ...left.links].filter(ours), []);
    const processes = left.processes.filter((pid) => {
      try {
        return ours(readFileSync(`/proc/${pid}/cmdline`, 'utf8'));
      } catch {
        return false;
      }
    });
    assert.deepEqual(processes, [], 'a process of an engine (dockerd, containerd, a container) is left');
    for (const p of [...homes, ...dirs]) assert.equal(existsSync(p), false, `${p} is left`);
  });
});
