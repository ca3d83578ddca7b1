// What bench/scale.ts and bench/records.ts share: running sbx, timing its commands (median of
// RUNS runs), the bench-up sandbox (nginx answering on 8080, exposed) and the figures taken of it.
import { execFileSync, spawnSync } from 'node:child_process';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..');
export const SBX = join(ROOT, 'bin', 'sbx');
export const RUNS = Number(process.env.RUNS ?? 9);
export const DURATION = process.env.DURATION ?? '5';
export const home = process.env.SBX_HOME!;

export const sbx = (...args: string[]) => execFileSync(SBX, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'inherit'] });
export const sh = (cmd: string) => execFileSync('sh', ['-c', cmd], { encoding: 'utf8', stdio: ['pipe', 'pipe', 'inherit'] });
export const step = (s: string) => process.stderr.write(`==> ${s}\n`);
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Stops the gateway and starts it again (it puts every sandbox's rules back): seconds it took to start. */
export function restartGateway(): number {
  sbx('gateway', 'stop');
  const t = performance.now();
  sbx('gateway', 'start');
  return (performance.now() - t) / 1000;
}

export const gwPort = () => JSON.parse(sbx('gateway', 'status', '--json')).port as number;

/** Median wall time of a command over RUNS runs (after one warm-up). */
export function timeMs(args: string[], before?: () => void): number {
  const runs: number[] = [];
  for (let i = 0; i <= RUNS; i++) {
    before?.();
    const t0 = performance.now();
    execFileSync(SBX, args, { stdio: 'ignore' });
    if (i > 0) runs.push(performance.now() - t0);
  }
  return median(runs);
}

/** bench-up: nginx answering on 8080 in a sandbox, exposed. */
export function benchUp(): void {
  const box = JSON.parse(sbx('create', '--name', 'bench-up', '-p', '8080', '--json'));
  execFileSync('docker', ['cp', '/usr/sbin/nginx', `${box.container}:/usr/sbin/nginx`]);
  execFileSync(SBX, ['exec', '-i', 'bench-up', '--', 'sh', '-c', 'cat > /tmp/up.conf'], {
    input: `user root; worker_processes 1; pid /tmp/up.pid; error_log stderr;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path /tmp; proxy_temp_path /tmp; fastcgi_temp_path /tmp; uwsgi_temp_path /tmp; scgi_temp_path /tmp;
  server { listen 8080 backlog=4096; keepalive_requests 1000000; location / { return 200 "hello\\n"; } } }
`,
  });
  sbx('exec', '-d', 'bench-up', '--', '/usr/sbin/nginx', '-c', '/tmp/up.conf', '-g', 'daemon off;');
  while (spawnSync('curl', ['-sf', '-o', '/dev/null', `http://${box.ip}:8080/`]).status !== 0) sh('sleep 0.1');
}

export interface Figures { ls: number; inspect: number; expose: number; update: number; firstOk: number; rps: number; rpsDirect: number; dockerInspect: number; nodeStart: number }

/** Median wall time of any command over RUNS runs (after one warm-up): the engine's and Node's own figures. */
export function timeCmd(file: string, args: string[]): number {
  const runs: number[] = [];
  for (let i = 0; i <= RUNS; i++) {
    const t0 = performance.now();
    execFileSync(file, args, { stdio: 'ignore' });
    if (i > 0) runs.push(performance.now() - t0);
  }
  return median(runs);
}

export function measure(gwPort: number, container: string): Figures {
  // What sbx does not control, measured the same way: the engine answering one inspect (its own
  // CLI) and a bare Node start. Both grow with idle sandboxes too (every container has a shim).
  const dockerInspect = timeCmd('docker', ['inspect', container]);
  const nodeStart = timeCmd(process.execPath, ['-e', '0']);
  const url = `http://8080-bench-up.sbx.localhost:${gwPort}/`;
  const ls = timeMs(['ls']);
  const inspect = timeMs(['inspect', 'bench-up']);
  const expose = timeMs(['port', 'expose', 'bench-up', '8080'], () => execFileSync(SBX, ['port', 'rm', 'bench-up', '8080'], { stdio: 'ignore' }));
  let flip = false;
  const update = timeMs(['network', 'update', 'bench-up', '--deny-out', '198.18.0.99'], () => {
    flip = !flip;
    execFileSync(SBX, ['network', 'update', 'bench-up', '--deny-out', flip ? '198.18.0.98' : '198.18.0.97'], { stdio: 'ignore' });
  });
  // Port expose to the first 200: the CLI run and curl until it answers.
  const firsts: number[] = [];
  for (let i = 0; i < 5; i++) {
    execFileSync(SBX, ['port', 'rm', 'bench-up', '8080'], { stdio: 'ignore' });
    const t0 = performance.now();
    execFileSync(SBX, ['port', 'expose', 'bench-up', '8080'], { stdio: 'ignore' });
    while (spawnSync('curl', ['-sf', '-o', '/dev/null', url]).status !== 0);
    firsts.push(performance.now() - t0);
  }
  sh('sleep 2');
  const wrk = (args: string[]) => Number(/Requests\/sec:\s+([\d.]+)/.exec(spawnSync('wrk', ['-t1', '-c32', `-d${DURATION}s`, ...args], { encoding: 'utf8' }).stdout)?.[1] ?? 0);
  const rps = wrk(['-H', `Host: 8080-bench-up.sbx.localhost:${gwPort}`, `http://127.0.0.1:${gwPort}/`]);
  // The baseline: the same server without the gateway (a direct connection to its bridge address).
  const ip = JSON.parse(sbx('inspect', 'bench-up', '--json')).ip as string;
  const rpsDirect = wrk([`http://${ip}:8080/`]);
  return { ls, inspect, expose, update, firstOk: median(firsts), rps, rpsDirect, dockerInspect, nodeStart };
}
