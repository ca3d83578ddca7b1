// Egress benchmarks (run by bench/egress.sh): each figure beside its baseline from the same run.
//  - connection + request latency from inside a sandbox to a fake internet host, against a plain
//    `docker run` container on Docker's default bridge (no sbx rules at all);
//  - DNS through sbx's forwarder against the same query straight to the upstream;
//  - the same paths with the network log on against off (SBX_NETWORK_LOG=0), in one run;
//  - `sbx network update` with 10 to 10,000 entries against `sbx network show`.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFakeInternet } from '../test/fake-internet.ts';

const ROOT = join(import.meta.dirname, '..');
const SBX = join(ROOT, 'bin', 'sbx');
const N = Number(process.env.SAMPLES ?? 300);
const probe = readFileSync(join(ROOT, 'bench', 'latency.py'), 'utf8');

const sbx = (...args: string[]) => execFileSync(SBX, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'inherit'] });
const docker = (...args: string[]) => execFileSync('docker', args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'inherit'] });

interface Sample {
  median_ms: number;
  p99_ms: number;
}

function inContainer(container: string, ...args: string[]): Sample {
  return JSON.parse(execFileSync('docker', ['exec', '-i', container, 'python3', '-', ...args], { input: probe, encoding: 'utf8' })) as Sample;
}

const fmt = (s: Sample) => `${s.median_ms.toFixed(2)} / ${s.p99_ms.toFixed(2)} ms`;
const row = (what: string, s: Sample, base: Sample, baseName: string, target = '(context)') =>
  console.log(`| ${what} | ${fmt(s)} | ${baseName}: ${fmt(base)} | +${(s.median_ms - base.median_ms).toFixed(2)} / +${(s.p99_ms - base.p99_ms).toFixed(2)} ms | ${target} |`);

function time(fn: () => void, runs = 5): number {
  fn();
  const t = performance.now();
  for (let i = 0; i < runs; i++) fn();
  return (performance.now() - t) / runs;
}

const fi = await startFakeInternet();
process.env.SBX_DNS_UPSTREAM = fi.dnsUpstream;
try {
  sbx('gateway', 'stop');
  const box = JSON.parse(sbx('create', '--name', 'bench-egress', '--json')).container as string;
  docker('run', '-d', '--name', 'sbx-bench-plain-egress', 'sbx/base:bookworm', 'sleep', 'infinity');
  const gw = /nameserver (\S+)/.exec(docker('exec', box, 'cat', '/etc/resolv.conf'))![1]!;

  const plainHttp = inContainer('sbx-bench-plain-egress', 'http', '198.18.0.1', '80', 'allowed.test', String(N));
  row('HTTP connect + GET, allow-all', inContainer(box, 'http', '198.18.0.1', '80', 'allowed.test', String(N)), plainHttp, 'plain docker run');
  const cidrs = Array.from({ length: 5000 }, (_, i) => `10.${(i >> 8) & 255}.${i & 255}.0/24`).join(',');
  sbx('network', 'update', 'bench-egress', '--deny-out', cidrs);
  row('HTTP connect + GET, 5,000 denied CIDRs', inContainer(box, 'http', '198.18.0.1', '80', 'allowed.test', String(N)), plainHttp, 'plain docker run');
  sbx('network', 'update', 'bench-egress', '--mode', 'block-all', '--allow-out', 'allowed.test');
  docker('exec', box, 'getent', 'hosts', 'allowed.test');
  row('HTTP connect + GET, Host checked by the proxy', inContainer(box, 'http', '198.18.0.1', '80', 'allowed.test', String(N)), plainHttp, 'plain docker run');
  const plainTls = inContainer('sbx-bench-plain-egress', 'https', '198.18.0.1', 'allowed.test', String(N));
  row('TLS connect + GET, SNI checked by the proxy', inContainer(box, 'https', '198.18.0.1', 'allowed.test', String(N)), plainTls, 'plain docker run', '(context: TLS handshakes with the Python server take ~57 ms here)');

  // A name:port entry: its answers open the address in the kernel (plain names open nothing there).
  sbx('network', 'update', 'bench-egress', '--allow-out', 'allowed.test:8080');
  const direct = inContainer(box, 'dns', '198.18.0.53', 'allowed.test', String(N));
  row('DNS query through sbx (allowed name:port: opens its address)', inContainer(box, 'dns', gw, 'allowed.test', String(N)), direct, 'straight to the upstream');
  row('DNS query through sbx (no name rule)', inContainer(box, 'dns', gw, 'other.test', String(N)), direct, 'straight to the upstream');

  // The network log on against off (SBX_NETWORK_LOG=0: no log rules, no entries from the worker),
  // alternated twice, each from a gateway started for it: the kernel path (an address entry, so
  // the proxy is not in the way), the proxy (Host checked) and DNS.
  const paths: Array<[string, string[], () => Sample]> = [
    ['HTTP connect + GET by address (the kernel logs it)', ['--mode', 'block-all', '--allow-out', '198.18.0.1'], () => inContainer(box, 'http', '198.18.0.1', '80', 'allowed.test', String(N))],
    ['HTTP connect + GET, Host checked by the proxy (it logs it)', ['--mode', 'block-all', '--allow-out', 'allowed.test'], () => inContainer(box, 'http', '198.18.0.1', '80', 'allowed.test', String(N))],
    ['DNS query through sbx (the forwarder logs it)', ['--mode', 'block-all', '--allow-out', 'allowed.test'], () => inContainer(box, 'dns', gw, 'allowed.test', String(N))],
  ];
  const runs: Record<'on' | 'off', Sample[][]> = { on: [], off: [] };
  for (const mode of ['on', 'off', 'on', 'off'] as const) {
    sbx('gateway', 'stop');
    execFileSync(SBX, ['gateway', 'start'], { env: { ...process.env, SBX_NETWORK_LOG: mode === 'on' ? '1' : '0' }, stdio: ['ignore', 'ignore', 'inherit'] });
    runs[mode].push(paths.map(([, policy, measure]) => {
      sbx('network', 'update', 'bench-egress', ...policy);
      if (policy.includes('allowed.test')) docker('exec', box, 'getent', 'hosts', 'allowed.test');
      return measure();
    }));
  }
  const best = (samples: Sample[]) => samples.reduce((a, b) => (a.median_ms <= b.median_ms ? a : b));
  paths.forEach(([what], i) => {
    const on = best(runs.on.map((r) => r[i]!));
    const off = best(runs.off.map((r) => r[i]!));
    const ratio = on.median_ms / off.median_ms;
    console.log(`| ${what}, network log on | ${fmt(on)} | off: ${fmt(off)} | ${ratio.toFixed(3)}x median | within 5% | ${ratio <= 1.05 ? 'met' : 'MISSED'} |`);
  });
  sbx('gateway', 'stop');
  sbx('gateway', 'start');

  const show = time(() => sbx('network', 'show', 'bench-egress'));
  for (const count of [10, 1000, 10000]) {
    const file = join(tmpdir(), `sbx-bench-entries-${count}`);
    writeFileSync(file, Array.from({ length: count }, (_, i) => (i % 2 ? `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}` : `host${i}.example.test`)).join('\n'));
    const ms = time(() => sbx('network', 'update', 'bench-egress', '--mode', 'block-all', '--allow-out', `@${file}`));
    rmSync(file);
    console.log(`| network update, ${count.toLocaleString('en')} entries (half names) | ${ms.toFixed(0)} ms | network show: ${show.toFixed(0)} ms | +${(ms - show).toFixed(0)} ms | ${count === 10000 ? 'under 2 s (thousands must stay fast)' : '(context)'} |`);
  }
} finally {
  try { docker('rm', '-f', 'sbx-bench-plain-egress'); } catch {}
  try { sbx('rm', '-f', 'bench-egress'); } catch {}
  try { sbx('gateway', 'stop'); } catch {}
  await fi.stop();
}
