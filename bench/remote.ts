// `sbx create` + `rm` against an engine in another network namespace (a remote host as sbx meets
// it: test/remote-engine.ts), through the agent, by its socket and by `docker exec` (how tcp://
// and ssh:// engines are reached), against raw docker doing the same work on that engine.
// Prints Markdown rows. Run by bench/remote.sh.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { agentNames } from '../src/api/agent-backend.ts';
import { loadImages, startRemoteEngine } from '../test/remote-engine.ts';

const ROOT = join(import.meta.dirname, '..');
const SBX = join(ROOT, 'bin', 'sbx');
const RUNS = Number(process.env.RUNS ?? 10);

const engine = await startRemoteEngine();
const home = mkdtempSync(join(tmpdir(), 'sbx-bench-remote-'));
const env = { ...process.env, DOCKER_HOST: engine.dockerHost, SBX_HOME: home, SBX_GATEWAY_PORT: '0' };
const sbx = (args: string[], extra: Record<string, string> = {}) => execFileSync(SBX, args, { env: { ...env, ...extra }, stdio: ['ignore', 'ignore', 'inherit'] });
const docker = (args: string[]) => execFileSync('docker', ['-H', engine.dockerHost, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });

/** Mean ms of `fn` over RUNS runs after one warm-up. */
function time(fn: () => void): number {
  fn();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < RUNS; i++) fn();
  return Number(process.hrtime.bigint() - t0) / 1e6 / RUNS;
}

try {
  await loadImages(engine, ['sbx/base:bookworm', 'sbx/agent-root:bookworm-2']);
  sbx(['ls']); // starts the agent (building its image on that engine)
  const raw = time(() => {
    docker(['network', 'create', '-o', 'com.docker.network.bridge.name=sbx-bench-raw', '-o', 'com.docker.network.bridge.enable_icc=false', 'sbx-bench-raw']);
    docker(['run', '-d', '--name', 'sbx-bench-raw', '--network', 'sbx-bench-raw', '--hostname', 'bench', '--init', '--cap-drop', 'ALL', '--cap-add', 'CHOWN', '--cap-add', 'DAC_OVERRIDE', '--cap-add', 'FOWNER', '--cap-add', 'FSETID', '--cap-add', 'SETUID', '--cap-add', 'SETGID', '--cap-add', 'KILL', '--cap-add', 'NET_BIND_SERVICE', '--pids-limit', '1024', '--security-opt', 'no-new-privileges', '--sysctl', 'net.ipv6.conf.lo.disable_ipv6=0', 'sbx/base:bookworm', 'sleep', 'infinity']);
    docker(['rm', '-f', 'sbx-bench-raw']);
    docker(['network', 'rm', 'sbx-bench-raw']);
  });
  const viaSocket = time(() => {
    sbx(['create', '--name', 'bench-r']);
    sbx(['rm', '-f', 'bench-r']);
  });
  const viaExec = time(() => {
    sbx(['create', '--name', 'bench-r'], { SBX_AGENT_VIA: 'exec' });
    sbx(['rm', '-f', 'bench-r'], { SBX_AGENT_VIA: 'exec' });
  });
  const f = (x: number) => x.toFixed(0);
  console.log(`| create + rm, remote engine, agent by its socket | ${f(viaSocket)} ms | raw docker on that engine, same work: ${f(raw)} ms | ${(viaSocket / raw).toFixed(2)}x | (measured, as the issue asks) | |`);
  console.log(`| create + rm, remote engine, agent by docker exec | ${f(viaExec)} ms | raw docker on that engine, same work: ${f(raw)} ms | ${(viaExec / raw).toFixed(2)}x | (context: tcp:// and ssh:// engines) | |`);
} finally {
  try {
    execFileSync('docker', ['-H', engine.dockerHost, 'rm', '-f', agentNames(home, undefined, engine.dockerHost).container], { stdio: 'ignore' });
  } catch {}
  rmSync(join('/run/sbx-agent', agentNames(home, undefined, engine.dockerHost).key), { recursive: true, force: true });
  rmSync(home, { recursive: true, force: true });
  await engine.close();
}
