// The per-packet cost of sbx's egress rules as sandboxes add up (run by bench/rules.sh): connection
// latency with one sandbox's rules in the kernel, then with 999 more sandboxes' rules (the same
// scripts sbx applies, keyed on bridges sbx-rb<N> that carry no traffic), alternated in one run;
// each figure is the median of the phases' medians (and of their p99s).
//  - out: a new connection + GET from inside the sandbox to a fake internet host (forward hook);
//  - in:  a new connection + GET from the host to a server in the sandbox (output and input hooks).
// Docker's own per-network iptables rules are not here (no Docker networks are added): see
// bench/scale.sh for the whole machine with real sandboxes.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startFakeInternet } from '../test/fake-internet.ts';
import { compilePolicy } from '../src/core/network-policy.ts';
import { removeScript, rulesScript } from '../src/net/nft-rules.ts';

const ROOT = join(import.meta.dirname, '..');
const SBX = join(ROOT, 'bin', 'sbx');
const N = Number(process.env.SAMPLES ?? 300);
const MORE = Number(process.env.MORE ?? 999);
const CYCLES = Number(process.env.CYCLES ?? 2);
const probe = readFileSync(join(ROOT, 'bench', 'latency.py'), 'utf8');

const sbx = (...args: string[]) => execFileSync(SBX, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'inherit'] });
const nft = (script: string) => execFileSync('nft', ['-f', '-'], { input: script, stdio: ['pipe', 'inherit', 'inherit'] });

interface Sample { median_ms: number; p99_ms: number }
const sample = (where: string[], ...args: string[]): Sample =>
  JSON.parse(execFileSync(where[0]!, [...where.slice(1), 'python3', '-', ...args], { input: probe, encoding: 'utf8' })) as Sample;

const fakeIds = Array.from({ length: MORE }, (_, i) => `rb${String(i).padStart(8, '0')}`);
const listeners = { dns: 5301, http: 5302, tls: 5303 };
function addMore(): void {
  // A realistic mix: most allow-all, every third block-all with a name (DNS, proxy and name rules).
  const policies = [compilePolicy(), compilePolicy({ mode: 'block-all', allowOut: ['allowed.test', 'api.example.test:8443'], denyOut: [], allowPorts: [], denyPorts: [] })];
  for (let i = 0; i < fakeIds.length; i += 50) {
    nft(fakeIds.slice(i, i + 50).map((id, j) => rulesScript({ id, bridge: `sbx-${id}` }, policies[(i + j) % 3 === 0 ? 1 : 0]!, { listeners })).join(''));
  }
}
function removeMore(): void {
  for (let i = 0; i < fakeIds.length; i += 100) nft(fakeIds.slice(i, i + 100).map((id) => removeScript(id)).join(""));
}

const fi = await startFakeInternet();
process.env.SBX_DNS_UPSTREAM = fi.dnsUpstream;
try {
  const box = JSON.parse(sbx('create', '--name', 'bench-rules', '--json'));
  const ip = box.ip as string;
  execFileSync('docker', ['exec', '-d', box.container, 'python3', '-m', 'http.server', '8080']);
  for (let i = 0; i < 50; i++) { try { execFileSync('curl', ['-sf', '-o', '/dev/null', `http://${ip}:8080/`]); break; } catch { execFileSync('sleep', ['0.1']); } }
  const inBox = ['docker', 'exec', '-i', box.container];
  const onHost = ['env'];
  const measure = () => ({ out: sample(inBox, 'http', '198.18.0.1', '80', 'allowed.test', String(N)), in: sample(onHost, 'http', ip, '8080', ip, String(N)) });

  // Alternated (1, 1000, 1, 1000, 1): a machine whose speed drifts shows in both states alike.
  const ones = [measure()];
  const manys: Array<ReturnType<typeof measure>> = [];
  let addMs = 0;
  for (let c = 0; c < CYCLES; c++) {
    const t0 = performance.now();
    addMore();
    addMs += (performance.now() - t0) / CYCLES;
    manys.push(measure());
    removeMore();
    ones.push(measure());
  }

  const mid = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b), m = s.length >> 1;
    return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
  };
  process.stderr.write(`phase medians (ms), out: 1 ${ones.map((m) => m.out.median_ms.toFixed(3)).join(' ')} | many ${manys.map((m) => m.out.median_ms.toFixed(3)).join(' ')}; in: 1 ${ones.map((m) => m.in.median_ms.toFixed(3)).join(' ')} | many ${manys.map((m) => m.in.median_ms.toFixed(3)).join(' ')}\n`);
  const fmt = (xs: Sample[]) => `${mid(xs.map((x) => x.median_ms)).toFixed(3)} / ${mid(xs.map((x) => x.p99_ms)).toFixed(3)} ms`;
  for (const dir of ['out', 'in'] as const) {
    const what = dir === 'out' ? 'new connection + GET, sandbox to a fake internet host' : 'new connection + GET, host to a server in the sandbox';
    const many = manys.map((m) => m[dir]), one = ones.map((m) => m[dir]);
    const ratio = mid(many.map((x) => x.median_ms)) / mid(one.map((x) => x.median_ms));
    console.log(`| ${what}, ${MORE + 1} sandboxes' rules | ${fmt(many)} | 1 sandbox: ${fmt(one)} | ${ratio.toFixed(2)}x median | within 10% | ${ratio <= 1.1 ? 'met' : 'MISSED'} |`);
  }
  console.log(`| putting ${MORE} sandboxes' rules in (batches of 50) | ${(addMs / 1000).toFixed(1)} s | | ${(addMs / MORE).toFixed(1)} ms per sandbox | (context) | |`);
} finally {
  try { removeMore(); } catch {}
  try { sbx('rm', '-f', 'bench-rules'); } catch {}
  try { sbx('gateway', 'stop'); } catch {}
  await fi.stop();
}
