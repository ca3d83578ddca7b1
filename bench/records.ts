// sbx's own work with a thousand sandboxes, without the machine's (run by bench/records.sh).
// bench/scale.sh runs 1,000 real sandboxes, and on 2 cores their idle containers slow every process
// (node -e 0 itself 1.48x): its figures mix both. Here the other sandboxes are records only: the
// store holds RECORDS-1 more sandboxes like bench-up (a public port, a token, a policy; stopped,
// no container), and the gateway puts every one's egress rules in the kernel at its start, as it
// does for real ones. What grows is what sbx reads, writes and compiles per command: the store,
// the nft table, the gateway's route table and egress worker. Not here: nginx routes to the other
// sandboxes (they do not run), the engine's networks and containers.
// Sets: 1 record, RECORDS, then 1 again (the baseline is the mean of the two single sets).
import { execFileSync } from 'node:child_process';
import { Store } from '../src/store/store.ts';
import { removeScript } from '../src/net/nft-rules.ts';
import { benchUp, gwPort, home, measure, restartGateway, sbx, sh, step, type Figures } from './scale-lib.ts';

const N = Number(process.env.RECORDS ?? 1000);

const store = new Store(home);
const fakeIds = Array.from({ length: N - 1 }, (_, i) => `rec${String(i).padStart(7, '0')}`);

/** The other sandboxes: copies of bench-up's record, stopped, each with its own id and name. */
async function addRecords(): Promise<void> {
  await store.update((data) => {
    const up = Object.values(data.sandboxes).find((r) => r.name === 'bench-up')!;
    fakeIds.forEach((id, i) => {
      data.sandboxes[id] = { ...structuredClone(up), id, name: `bench-r${i}`, desired: 'stopped', createdAt: new Date(Date.parse(up.createdAt) - 1000 - i).toISOString() };
    });
  });
}

/** Takes them out of the store, then their rules out of the kernel (50 to an nft run). */
async function removeRecords(): Promise<void> {
  await store.update((data) => {
    for (const id of fakeIds) delete data.sandboxes[id];
  });
  for (let i = 0; i < fakeIds.length; i += 50) {
    execFileSync('nft', ['-f', '-'], { input: fakeIds.slice(i, i + 50).map((id) => removeScript(id)).join('\n') });
  }
}

function figures(label: string): { f: Figures; startS: number } {
  const startS = restartGateway();
  sh('sleep 3');
  step(`measuring with ${label}`);
  const f = measure(gwPort(), container);
  process.stderr.write(`${label}: ${JSON.stringify({ ...f, startS })}\n`);
  return { f, startS };
}

let container = '';
try {
  step('one sandbox: nginx answering on 8080, exposed');
  benchUp();
  container = JSON.parse(sbx('inspect', 'bench-up', '--json')).container as string;
  const one = figures('1 record');
  await addRecords();
  const many = figures(`${N} records`);
  await removeRecords();
  const again = figures('1 record, again');
  const base = (k: keyof Figures) => (one.f[k] + again.f[k]) / 2;

  const row = (what: string, k: keyof Figures, unit: string, limit: number, higherIsBetter = false) => {
    const ratio = many.f[k] / base(k);
    const ok = higherIsBetter ? ratio >= 1 / limit : ratio <= limit;
    const within = limit === 2 ? 'within 2x' : `within ${Math.round((limit - 1) * 100)}%`;
    console.log(`| ${what} | ${many.f[k].toFixed(0)} ${unit} | 1 record: ${base(k).toFixed(0)} ${unit} | ${ratio.toFixed(2)}x | ${within} | ${ok ? 'met' : 'MISSED'} |`);
  };
  row(`sbx ls, ${N} records`, 'ls', 'ms', 2);
  row('sbx inspect', 'inspect', 'ms', 1.2);
  row('sbx port expose', 'expose', 'ms', 1.2);
  row('sbx network update', 'update', 'ms', 1.2);
  row('port expose to first 200', 'firstOk', 'ms', 1.2);
  row('gateway RPS (wrk, 32 connections)', 'rps', 'req/s', 1.2, true);
  const context = (what: string, k: keyof Figures) => console.log(`| ${what} | ${many.f[k].toFixed(0)} ms | 1 record: ${base(k).toFixed(0)} ms | ${(many.f[k] / base(k)).toFixed(2)}x | (context: the machine, unchanged) | |`);
  context('node -e 0', 'nodeStart');
  context('docker inspect (the engine\'s CLI)', 'dockerInspect');
  const startBase = (one.startS + again.startS) / 2;
  console.log(`| sbx gateway start (every sandbox's rules put back) | ${(many.startS * 1000).toFixed(0)} ms | 1 record: ${(startBase * 1000).toFixed(0)} ms | ${(many.startS / startBase).toFixed(2)}x | (context) | |`);
} finally {
  // Whatever happened: no record and no rule of the others is left (bench_cleanup does the rest).
  await removeRecords().catch(() => {});
}
