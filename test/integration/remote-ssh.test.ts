// sbx against a remote engine reached by DOCKER_HOST=ssh://root@<host>:<port>, as the docker CLI
// reaches one: the system ssh runs `docker system dial-stdio` on the host (src/runtime/ssh-dial.ts).
// The host is a second dockerd in a network namespace of its own (test/remote-engine.ts) with an
// sshd there (test/ssh-server.ts) whose sessions' docker talks to that engine. Every call of sbx
// and of the docker CLI here goes over ssh, with a key and known_hosts made for the run. Attacks
// beside controls: egress from a sandbox on that engine, a wrong host key, an ssh that cannot
// connect, malformed URLs. Run under flock /tmp/sbx-fi.lock (the fake internet).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { AgentWorld } from '../agent-world.ts';
import { eventually, oneErrorLine, run } from '../helpers.ts';
import { startFakeInternet, type FakeInternet } from '../fake-internet.ts';
import { loadImages, remoteEngineLeftovers, startRemoteEngine, type RemoteEngine } from '../remote-engine.ts';
import { sessions, sshdMissing, startSshServer, type SshServer } from '../ssh-server.ts';

const missing = sshdMissing();

let fi: FakeInternet;
let engine: RemoteEngine;
let ssh: SshServer;
let world: AgentWorld;
const lines = (s: string) => s.split('\n').filter(Boolean);
/** docker straight to the engine's socket (not over ssh): what is really there. */
const onEngine = (...args: string[]) => run('docker', ['-H', engine.dockerHost, ...args]);

/** ssh clients of this machine still connected to the test's sshd. */
function sshClients(): string[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .map((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ');
      } catch {
        return '';
      }
    })
    .filter((c) => c.includes('dial-stdio') && c.includes(` ${ssh.host} `));
}

/** A TCP connect from inside (test/fixtures/probe.py): 'ok', or 'fail' that came fast. */
async function tcp(box: string, host: string, port: number): Promise<'ok' | 'fail'> {
  const r = await world.sbx(['exec', box, '--', 'python3', '/probe.py', 'connect', host, String(port)]);
  const line = r.stdout.trim();
  assert.match(line, /^(ok|fail \S+) \d+$/, `probe said "${line}" (${r.stderr})`);
  const [v, ...rest] = line.split(' ');
  assert.ok(Number(rest[rest.length - 1]) < 2000, `connect to ${host}:${port} took too long: ${line}`);
  return v as 'ok' | 'fail';
}

/** GET on this machine's port: status and body. */
function getLocal(port: number, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    httpGet({ host: '127.0.0.1', port, path, timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

describe('DOCKER_HOST=ssh://', { skip: missing ? `cannot run an sshd: ${missing}` : false }, () => {
  let cleaned = false;
  const pathBefore = process.env.PATH;

  before(async () => {
    fi = await startFakeInternet();
    engine = await startRemoteEngine();
    await loadImages(engine, ['sbx/base:bookworm', 'sbx/agent-root:bookworm-2']);
    ssh = await startSshServer(engine);
    // The client's ssh, for sbx and the docker CLI alike: the run's key and known_hosts only.
    process.env.PATH = `${ssh.binDir}:${pathBefore}`;
    delete process.env.SSH_AUTH_SOCK;
    world = new AgentWorld(
      // The agent mounts this socket (the engine's, on its host): an ssh:// URL names no socket.
      { SBX_DNS_UPSTREAM: fi.dnsUpstream, SBX_AGENT_ENGINE_SOCKET: engine.socket },
      { dockerHost: ssh.dockerHost },
    );
  });

  after(async () => {
    if (cleaned) return;
    cleaned = true;
    await world?.cleanup();
    // Nothing of ssh is left: no client here, no sshd there (its sessions included), no files.
    await eventually(async () => sshClients().length === 0, 'the ssh clients of sbx to exit', 10_000).catch(() => {});
    const clients = ssh ? sshClients() : [];
    await ssh?.close();
    const netns = engine?.netns;
    const sshd = netns ? sessions(netns) : [];
    await engine?.close();
    await fi?.stop();
    process.env.PATH = pathBefore;
    assert.deepEqual(clients, [], 'ssh clients left running');
    assert.deepEqual(sshd, [], 'sshd processes left in the engine namespace');
    if (netns) assert.ok(!remoteEngineLeftovers().netns.some((n) => n.startsWith(netns)), `${netns} is left`);
    assert.ok(!readdirSync('/tmp').some((d) => d.startsWith('sbxssh-') && existsSync(`/tmp/${d}/sshd_config`) && readFileSync(`/tmp/${d}/sshd_config`, 'utf8').includes(engine.socket)), 'the sshd files are left');
  });

  it('control: the engine the docker CLI reaches over this ssh is the remote one (its data root), not this machine\'s', async () => {
    const over = await world.docker('info', '--format', '{{.DockerRootDir}}');
    assert.equal(over.code, 0, over.stderr);
    const direct = await onEngine('info', '--format', '{{.DockerRootDir}}');
    assert.equal(over.stdout.trim(), direct.stdout.trim());
    assert.ok(over.stdout.startsWith('/tmp/sbxre-'), over.stdout);
  });

  it('sbx create and sbx exec (output, stdin, exit code) work over ssh; the sandbox is on the remote engine', async (t) => {
    const began = performance.now();
    const box = await world.json(['create', '--name', 'open', '-p', '8080', '--', 'python3', '-m', 'http.server', '8080']);
    t.diagnostic(`first create (agent image built and started over ssh): ${Math.round(performance.now() - began)} ms`);
    assert.equal(box.status, 'running');
    assert.deepEqual(lines((await onEngine('ps', '--filter', `label=sbx.id=${box.id}`, '--format', '{{.Names}}')).stdout), [`sbx-${box.id}`]);
    assert.deepEqual(lines((await run('docker', ['ps', '-q', '--filter', `label=sbx.id=${box.id}`])).stdout), [], "not on this machine's engine");
    const echo = await world.sbx(['exec', 'open', '--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    assert.deepEqual([echo.code, echo.stdout, echo.stderr], [3, 'out\n', 'err\n']);
    const t0 = performance.now();
    const cat = await world.sbx(['exec', '-i', 'open', '--', 'sh', '-c', 'tr a-z A-Z; echo done'], { input: 'through ssh\n' });
    t.diagnostic(`sbx exec -i over ssh: ${Math.round(performance.now() - t0)} ms`);
    assert.equal(cat.code, 0, cat.stderr);
    assert.equal(cat.stdout, 'THROUGH SSH\ndone\n');
    await world.put('open', 'probe.py', '/probe.py');
  });

  it('--block-network: a TCP connect to a fake internet host fails fast; control: allow-all reaches it', async () => {
    await world.json(['create', '--name', 'locked', '--block-network']);
    await world.put('locked', 'probe.py', '/probe.py');
    assert.equal(await tcp('open', '198.18.0.1', 80), 'ok');
    assert.equal(await tcp('open', '198.18.0.3', 7000), 'ok');
    assert.equal(await tcp('locked', '198.18.0.1', 80), 'fail');
    assert.equal(await tcp('locked', '198.18.0.3', 7000), 'fail');
  });

  it("sbx fetch and sbx port forward reach a sandbox's server over ssh", async () => {
    await eventually(async () => (await world.sbx(['fetch', 'open', '8080'])).code === 0, "open's server");
    const page = await world.sbx(['fetch', 'open', '8080', '/', '-i']);
    assert.equal(page.code, 0, page.stderr);
    assert.match(page.stdout, /^HTTP\/1\.1 200 OK\n[\s\S]*Directory listing/);
    const { child, localPort } = await world.forward('open', 8080);
    try {
      const answers = await Promise.all([getLocal(localPort), getLocal(localPort, '/probe.py')]);
      assert.equal(answers[0].status, 200);
      assert.match(answers[0].body, /Directory listing/);
      assert.equal(answers[1].status, 404, 'the server runs in /, where probe.py is not: a second request, its own answer');
    } finally {
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGINT');
      assert.equal(await exited, 0);
    }
  });

  describe('ssh that fails: exit 1, one line naming the host, nothing made on the engine', () => {
    const objects = async () => lines((await onEngine('ps', '-a', '--format', '{{.Names}}')).stdout).sort().join(',') + ' ' + lines((await onEngine('network', 'ls', '-q')).stdout).sort().join(',');

    it('a wrong host key (a man in the middle, as ssh sees it)', async () => {
      const before = await objects();
      const r = await world.sbx(['create', '--name', 'mitm'], { env: { PATH: `${ssh.wrongKeyBinDir()}:${pathBefore}` } });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const line = oneErrorLine(r);
      assert.ok(line.includes(`ssh to root@${ssh.host} port ${ssh.port} failed`), line);
      assert.match(line, /Host key verification failed/);
      assert.equal(await objects(), before);
      // Control: the same call with the right known_hosts works.
      const ok = await world.sbx(['ls']);
      assert.equal(ok.code, 0, ok.stderr);
      assert.match(ok.stdout, /open/);
    });

    it('an ssh port where nothing listens', async () => {
      const before = await objects();
      const r = await world.sbx(['create', '--name', 'nowhere'], { env: { DOCKER_HOST: `ssh://root@${ssh.host}:${ssh.port + 1}` } });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      const line = oneErrorLine(r);
      assert.ok(line.includes(`ssh to root@${ssh.host} port ${ssh.port + 1} failed`), line);
      assert.match(line, /Connection refused/);
      assert.equal(await objects(), before);
    });
  });

  it('a malformed ssh:// URL is a usage error (exit 2, one line); control: the right one works', async () => {
    for (const url of ['ssh://', `ssh://root@${ssh.host}:${ssh.port}/var/run/docker.sock`, 'ssh://root:pw@host']) {
      const r = await world.sbx(['ls'], { env: { DOCKER_HOST: url } });
      assert.equal(r.code, 2, `${url}: ${r.stdout}${r.stderr}`);
      assert.match(oneErrorLine(r), new RegExp(`^error: DOCKER_HOST=${url.replace(/[/.]/g, '\\$&')}: .*expected ssh://\\[user@\\]host\\[:port\\]$`));
    }
    const ok = await world.sbx(['ls']);
    assert.equal(ok.code, 0, ok.stderr);
  });
});
