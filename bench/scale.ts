// sbx with many sandboxes (run by bench/scale.sh): each figure with N sandboxes (default 1,000:
// SANDBOXES; created 8 at a time, idle, default image, each with an exposed port), then with 1 once
// the others are removed, in one run.
//  - ls (within 2x), inspect, port expose, network update (within 20%): median of RUNS CLI runs;
//  - the gateway's RPS (wrk) and port expose to the first 200 (within 20%);
//  - memory: the host's (MemAvailable) and the gateway's (Node + its nginx), per sandbox;
//  - creating them all (8 at a time) and removing them all, which must leave nothing.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { benchUp, gwPort, home, measure, restartGateway, sbx, SBX, sh, step } from './scale-lib.ts';

const N = Number(process.env.SANDBOXES ?? 1000);
const PAR = Number(process.env.PAR ?? 8);

/**
 * Waits until the machine is idle again (1-minute load under SETTLE_LOAD, at most SETTLE_MAX s):
 * right after hundreds of creates the engine and the gateway still work for a minute or more, and
 * every command measured then is slower for it (seen: `sbx --version` +35% 20 s after 199 creates).
 */
function settle(): number {
  const t0 = performance.now();
  const load = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  while (load() > Number(process.env.SETTLE_LOAD ?? 1) && performance.now() - t0 < Number(process.env.SETTLE_MAX ?? 300) * 1000) sh('sleep 5');
  return (performance.now() - t0) / 1000;
}

/** The share of the CPUs busy over `seconds` while nothing is measured (/proc/stat): the cost of idle sandboxes. */
function busyShare(seconds = 10): number {
  const read = () => readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const a = read();
  sh(`sleep ${seconds}`);
  const b = read();
  const d = b.map((v, i) => v - a[i]!);
  const total = d.reduce((x, y) => x + y, 0);
  return total ? 1 - (d[3]! + d[4]!) / total : 0; // idle + iowait
}

const memAvailableKb = () => Number(/MemAvailable:\s+(\d+)/.exec(readFileSync('/proc/meminfo', 'utf8'))![1]);
const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
function gatewayKb(): number {
  const status = JSON.parse(sbx('gateway', 'status', '--json'));
  let kb = rssKb(status.pid);
  try {
    const master = Number(readFileSync(join(home, 'run', 'nginx.pid'), 'utf8'));
    kb += rssKb(master);
    for (const w of sh(`ps -o pid= --ppid ${master} || true`).split('\n').filter(Boolean)) kb += rssKb(Number(w));
  } catch {}
  return kb;
}

function leftovers(ids: string[]): string[] {
  const left: string[] = [];
  const c = sh(`docker ps -aq --filter label=sbx.home=${home}`).trim();
  const n = sh(`docker network ls -q --filter label=sbx.home=${home}`).trim();
  if (c) left.push(`${c.split('\n').length} containers`);
  if (n) left.push(`${n.split('\n').length} networks`);
  const rules = sh('nft list table inet sbx 2>/dev/null || true');
  const withRules = ids.filter((id) => rules.includes(`egress_${id} `));
  if (withRules.length) left.push(`${withRules.length} sandboxes' nft rules`);
  const listed = JSON.parse(sbx('ls', '--json')) as unknown[];
  if (listed.length) left.push(`${listed.length} sandboxes in the store`);
  return left;
}

const loadNow = () => readFileSync('/proc/loadavg', 'utf8').split(' ')[0];

try {
  // REUSE=1: SBX_HOME already holds the N sandboxes (bench-up and bench-s*) of an earlier run
  // that was held (HOLD) and ended: measured as they are, without creating them again.
  let createS: number | undefined;
  if (process.env.REUSE) {
    const count = (JSON.parse(sbx('ls', '--json')) as unknown[]).length;
    if (count !== N) throw new Error(`REUSE: ${home} holds ${count} sandboxes, not SANDBOXES=${N}`);
    step(`reusing the ${N} sandboxes of ${home}`);
  } else {
    step('one sandbox: nginx answering on 8080, exposed');
    benchUp();
    step(`creating ${N - 1} more, ${PAR} at a time`);
    const t0 = performance.now();
    sh(`seq 1 ${N - 1} | xargs -P ${PAR} -I{} ${SBX} create --name bench-s{} -p 8080 --json >/dev/null`);
    createS = (performance.now() - t0) / 1000;
  }
  // Each set of figures from a gateway started for it: its memory is what it holds for them.
  const startN = restartGateway();
  const container = JSON.parse(sbx('inspect', 'bench-up', '--json')).container as string;
  sh('sleep 20');
  step(`settled in ${settle().toFixed(0)} s (1-minute load ${loadNow()})`);
  const busyN = busyShare();
  const memN = memAvailableKb();
  const gwN = gatewayKb();
  step(`measuring with ${N} sandboxes`);
  const many = measure(gwPort(), container);
  console.log(`${N} sandboxes: ${JSON.stringify(many)}`);

  // HOLD=FILE: the sandboxes stay until FILE is deleted (to look at sbx with all of them there).
  if (process.env.HOLD) {
    writeFileSync(process.env.HOLD, `SBX_HOME=${home}\n`);
    step(`holding until ${process.env.HOLD} is deleted`);
    while (existsSync(process.env.HOLD)) sh('sleep 5');
  }

  // Then the same with one: the others removed (timed), bench-up left.
  const listed = JSON.parse(sbx('ls', '--json')) as Array<{ id: string; name: string }>;
  const ids = listed.map((b) => b.id);
  step(`removing ${N - 1}, ${PAR} at a time`);
  const t1 = performance.now();
  execFileSync('sh', ['-c', `xargs -P ${PAR} -n 10 ${SBX} rm -f >/dev/null`], { input: listed.filter((b) => b.name !== 'bench-up').map((b) => b.id).join('\n'), stdio: ['pipe', 'inherit', 'inherit'] });
  const rmS = (performance.now() - t1) / 1000;
  const start1 = restartGateway();
  sh('sleep 20');
  step(`settled in ${settle().toFixed(0)} s (1-minute load ${loadNow()})`);
  const busy1 = busyShare();
  const mem1 = memAvailableKb();
  const gw1 = gatewayKb();
  step('measuring with 1 sandbox');
  const one = measure(gwPort(), container);
  console.log(`1 sandbox: ${JSON.stringify(one)}`);
  sbx('rm', '-f', 'bench-up');
  const left = leftovers(ids);

  /** 'met' or 'MISSED': a ratio within `limit` of 1 (a rate: no lower than 1/limit). */
  const verdict = (ratio: number, limit: number, higherIsBetter: boolean) => ((higherIsBetter ? ratio >= 1 / limit : ratio <= limit) ? 'met' : 'MISSED');
  const row = (what: string, a: number, b: number, unit: string, limit: number, higherIsBetter = false) => {
    const ratio = a / b;
    const within = limit === 2 ? 'within 2x' : `within ${Math.round((limit - 1) * 100)}%`;
    console.log(`| ${what} | ${a.toFixed(0)} ${unit} | 1 sandbox: ${b.toFixed(0)} ${unit} | ${ratio.toFixed(2)}x | ${within} | ${verdict(ratio, limit, higherIsBetter)} |`);
  };
  row(`sbx ls, ${N} sandboxes`, many.ls, one.ls, 'ms', 2);
  row('sbx inspect', many.inspect, one.inspect, 'ms', 1.2);
  row('sbx port expose', many.expose, one.expose, 'ms', 1.2);
  row('sbx network update', many.update, one.update, 'ms', 1.2);
  row('port expose to first 200', many.firstOk, one.firstOk, 'ms', 1.2);
  row('gateway RPS (wrk, 32 connections)', many.rps, one.rps, 'req/s', 1.2, true);
  // The machine itself slows with N idle containers (their shims, the kernel): the same figures
  // divided by what a bare `node -e 0` (each CLI command's start) and a direct connection (the
  // gateway's RPS) lost in the same run are what sbx's own work grew by.
  const node = many.nodeStart / one.nodeStart;
  const own = (what: string, ratio: number, base: string, higherIsBetter = false) =>
    console.log(`| ${what}, divided by ${base}'s growth | | | ${ratio.toFixed(2)}x | within 20% (sbx's own share) | ${verdict(ratio, 1.2, higherIsBetter)} |`);
  own('sbx inspect', many.inspect / one.inspect / node, 'node -e 0');
  own('sbx port expose', many.expose / one.expose / node, 'node -e 0');
  own('sbx network update', many.update / one.update / node, 'node -e 0');
  own('port expose to first 200', many.firstOk / one.firstOk / node, 'node -e 0');
  own('gateway RPS', many.rps / one.rps / (many.rpsDirect / one.rpsDirect), 'the direct RPS', true);
  const context = (what: string, a: number, b: number) => console.log(`| ${what} | ${a.toFixed(0)} ms | 1 sandbox: ${b.toFixed(0)} ms | ${(a / b).toFixed(2)}x | (context: not sbx's) | |`);
  context(`docker inspect (the engine's CLI), ${N} sandboxes`, many.dockerInspect, one.dockerInspect);
  context('node -e 0', many.nodeStart, one.nodeStart);
  console.log(`| RPS straight to the sandbox (wrk to its bridge address, no gateway) | ${many.rpsDirect.toFixed(0)} req/s | 1 sandbox: ${one.rpsDirect.toFixed(0)} req/s | ${(many.rpsDirect / one.rpsDirect).toFixed(2)}x | (context: the machine's share in the gateway's RPS) | |`);
  console.log(`| machine busy with nothing measured (/proc/stat, 10 s) | ${(busyN * 100).toFixed(0)}% | 1 sandbox: ${(busy1 * 100).toFixed(0)}% | | (context: idle sandboxes' shims, the engine, the kernel) | |`);
  console.log(`| sbx gateway start (it checks every sandbox's rules) | ${(startN * 1000).toFixed(0)} ms | 1 sandbox: ${(start1 * 1000).toFixed(0)} ms | ${(startN / start1).toFixed(2)}x | (context) | |`);
  const perBox = (kb: number) => `${(kb / 1024 / (N - 1)).toFixed(2)} MiB`;
  console.log(`| host memory per sandbox (MemAvailable) | ${perBox(mem1 - memN)} | | | (stated) | |`);
  console.log(`| gateway memory (Node + its nginx) | ${(gwN / 1024).toFixed(0)} MiB | 1 sandbox: ${(gw1 / 1024).toFixed(0)} MiB | ${perBox(gwN - gw1)} per sandbox | (stated) | |`);
  if (createS !== undefined) console.log(`| creating ${N - 1} sandboxes, ${PAR} at a time | ${createS.toFixed(0)} s | | ${((createS * 1000) / (N - 1)).toFixed(0)} ms each | (context) | |`);
  console.log(`| removing ${N - 1}, ${PAR} at a time, then the last | ${rmS.toFixed(0)} s | | left: ${left.length ? left.join(', ') : 'nothing'} | nothing left | ${left.length ? 'MISSED' : 'met'} |`);
} finally {
  try { sh(`${SBX} ls -q | xargs -r -P ${PAR} -n 10 ${SBX} rm -f >/dev/null 2>&1 || true`); } catch {}
}
