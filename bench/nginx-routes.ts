// RPS through the gateway's nginx (its real configuration, from renderNginxConfig) to one route,
// with 1 route and with ROUTES (default 1,000), the measured one's upstream block first or last.
// With `proxy_pass http://$variable` nginx looks the block up on every request among all blocks of
// the same name length, so where a route sits used to matter (0.59x last against first before the
// names were spread over lengths: src/gateway/nginx-config.ts upstreamName).
// A backend nginx on loopback answers; nothing else runs. Rounds alternate the shapes (ROUNDS, 3).
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { renderNginxConfig, type DirectRoute } from '../src/gateway/nginx-config.ts';

const N = Number(process.env.ROUTES ?? 1000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const DURATION = process.env.DURATION ?? '4';
const dir = mkdtempSync(join(tmpdir(), 'sbx-nginx-routes-'));
const BACK = 18180;
const FRONT = 18199;
const nginx = (conf: string) => execFileSync('/usr/sbin/nginx', ['-p', `${dir}/`, '-e', join(dir, 'error.log'), '-c', conf], { stdio: 'inherit' });
const stop = (pidFile: string) => { try { process.kill(Number(readFileSync(join(dir, pidFile), 'utf8')), 'SIGQUIT'); } catch {} };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function config(count: number, at: 'first' | 'last'): string {
  const routes: DirectRoute[] = Array.from({ length: count }, (_, i) => {
    const id = (i * 7919 + 1e9).toString(36).slice(-10); // ten characters, as sandbox ids
    return { hosts: [`8080-s${i}.sbx.localhost`, `8080-${id}.sbx.localhost`], name: `sbx_${id}_8080`, address: `10.200.${i >> 4}.${(i & 15) * 16 + 2}:8080` };
  });
  const t = at === 'first' ? 0 : count - 1;
  routes[t] = { ...routes[t]!, hosts: ['8080-target.sbx.localhost'], address: `127.0.0.1:${BACK}` };
  const text = renderNginxConfig({ listenHost: '127.0.0.1', listenPort: FRONT, nodeSocket: join(dir, 'node.sock'), runDir: dir, routes, version: 1, upstreamTimeoutMs: 30_000 });
  return text.replace('daemon off;', 'daemon on;');
}

function rps(count: number, at: 'first' | 'last'): number {
  writeFileSync(join(dir, 'front.conf'), config(count, at));
  nginx(join(dir, 'front.conf'));
  try {
    execFileSync('sh', ['-c', `until curl -sf -o /dev/null -H 'Host: 8080-target.sbx.localhost' http://127.0.0.1:${FRONT}/; do sleep 0.1; done`]);
    const wrk = spawnSync('wrk', ['-t1', '-c32', `-d${DURATION}s`, '-H', 'Host: 8080-target.sbx.localhost', `http://127.0.0.1:${FRONT}/`], { encoding: 'utf8' });
    return Number(/Requests\/sec:\s+([\d.]+)/.exec(wrk.stdout)?.[1] ?? 0);
  } finally {
    stop('nginx.pid');
    execFileSync('sh', ['-c', `while [ -e ${dir}/nginx.pid ]; do sleep 0.05; done`]);
  }
}

try {
  for (const d of ['nginx-body', 'nginx-proxy', 'nginx-fastcgi', 'nginx-uwsgi', 'nginx-scgi']) mkdirSync(join(dir, d));
  writeFileSync(join(dir, 'back.conf'), `worker_processes 1; pid ${dir}/back.pid; daemon on; events { worker_connections 4096; }
http { access_log off; client_body_temp_path ${dir}/nginx-body; proxy_temp_path ${dir}/nginx-proxy; fastcgi_temp_path ${dir}/nginx-fastcgi; uwsgi_temp_path ${dir}/nginx-uwsgi; scgi_temp_path ${dir}/nginx-scgi;
  server { listen 127.0.0.1:${BACK} backlog=4096; keepalive_requests 1000000; location / { return 200 "hello\\n"; } } }
`);
  nginx(join(dir, 'back.conf'));
  const one: number[] = [], first: number[] = [], last: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    one.push(rps(1, 'last'));
    first.push(rps(N, 'first'));
    last.push(rps(N, 'last'));
  }
  const [o, f, l] = [median(one), median(first), median(last)];
  console.log(`| RPS (wrk -c32, median of ${ROUNDS}) | 1 route | ${N} routes, its block first | ${N} routes, its block last | last / 1 route | target |`);
  console.log('| --- | --- | --- | --- | --- | --- |');
  console.log(`| gateway nginx, one route | ${o.toFixed(0)} | ${f.toFixed(0)} (${(f / o).toFixed(2)}x) | ${l.toFixed(0)} (${(l / o).toFixed(2)}x) | ${(l / o).toFixed(2)}x | within 20%: ${l / o >= 0.8 ? 'met' : 'MISSED'} |`);
} finally {
  stop('back.pid');
  rmSync(dir, { recursive: true, force: true });
}
