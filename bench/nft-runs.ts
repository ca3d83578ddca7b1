// The time of one `nft` run of sbx's (an apply, a fill, a DNS learn, a removal and re-apply) among 10 and
// among 1,000 sandboxes' rules (run by bench/nft-runs.sh). nft reads objects of the whole host's
// ruleset before each run, so this is the control-plane cost that grows with the count (the
// per-packet cost is bench/rules.sh's). The rules go into a table of their own, which is deleted.
import { execFileSync } from 'node:child_process';
import { compilePolicy } from '../src/core/network-policy.ts';
import { learnScript, policyScripts, removeScript, rulesScript } from '../src/net/nft-rules.ts';
import { loadLibNft } from '../src/net/libnft.ts';

const RUNS = Number(process.env.RUNS ?? 9);
const COUNTS = [10, Number(process.env.SANDBOXES ?? 1000)];
const T = `sbxbench${process.pid}`;
const nft = (script: string) => execFileSync('nft', ['-f', '-'], { input: script, stdio: ['pipe', 'inherit', 'inherit'] });
const dropTable = () => execFileSync('sh', ['-c', `nft delete table inet ${T} 2>/dev/null || true`]);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const listeners = { dns: 5301, http: 5302, tls: 5303 };
// A realistic mix, as in bench/rules.ts: most allow-all, every third block-all with names.
const plain = compilePolicy();
const named = compilePolicy({ mode: 'block-all', allowOut: ['allowed.test', 'api.example.test:8443', '198.18.0.0/24'], denyOut: [], allowPorts: ['22'], denyPorts: [] });

function fill(count: number): void {
  for (let i = 0; i < count; i += 50) {
    let batch = '';
    for (let j = i; j < Math.min(count, i + 50); j++) {
      const id = `nb${String(j).padStart(8, '0')}`;
      batch += rulesScript({ id, bridge: `sbx-${id}` }, j % 3 === 0 ? named : plain, { listeners, table: T });
    }
    nft(batch);
  }
}
// The two ways sbx runs a script: an `nft -f -` process (the CLI, the agent), and libnftables in
// the gateway's own process (src/net/libnft.ts), both timed on the same rules in one run.
const { lib, why } = await loadLibNft();
if (!lib) throw new Error(`libnftables: ${why}`);
const runners = {
  process: async (script: string) => void nft(script),
  library: async (script: string) => {
    const r = await lib.run(script);
    if (!r.ok) throw new Error(r.errors);
  },
};
type Way = keyof typeof runners;
let way: Way = 'process';
async function time(script: string): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i <= RUNS; i++) {
    const t0 = performance.now();
    await runners[way](script);
    if (i > 0) ms.push(performance.now() - t0);
  }
  return median(ms);
}

const link = { id: 'nbprobe0001', bridge: 'sbx-nbprobe0001' };
// An update of the entries alone (the same shape): the run that fills the sets (policyScripts).
const denying = (address: string) => policyScripts(link, compilePolicy({ mode: 'allow-all', allowOut: [], denyOut: [address], allowPorts: [], denyPorts: ['25'] }), { listeners, table: T, fillable: true });
const figures: Array<{ count: number } & Record<Way, Record<'apply' | 'learn' | 'remove' | 'fill', number>>> = [];
for (const count of COUNTS) {
  dropTable();
  fill(count);
  nft(rulesScript(link, named, { listeners, table: T }));
  const byWay = {} as Record<Way, Record<'apply' | 'learn' | 'remove' | 'fill', number>>;
  for (way of ['process', 'library'] as Way[]) {
    byWay[way] = {
      apply: (await time(rulesScript(link, plain, { listeners, table: T }) + rulesScript(link, named, { listeners, table: T }))) / 2,
      learn: await time(learnScript(link.id, [{ address: '198.51.100.7', family: 4, ttl: 60, ports: [{ from: 8443, to: 8443 }] }], T)),
      remove: await time(removeScript(link, T) + rulesScript(link, named, { listeners, table: T })),
      fill: (nft(denying('198.18.0.3').full), (await time(denying('198.18.0.4').fill + denying('198.18.0.3').fill)) / 2),
    };
  }
  figures.push({ count, ...byWay });
}
dropTable();
const [few, many] = figures as [(typeof figures)[0], (typeof figures)[0]];
const row = (what: string, key: 'apply' | 'learn' | 'remove' | 'fill') => {
  for (const w of ['process', 'library'] as Way[]) {
    const how = w === 'process' ? 'an nft -f - process' : 'libnftables in the process (the gateway)';
    console.log(`| ${what}, ${how}, ${many.count} sandboxes' rules | ${many[w][key].toFixed(1)} ms | ${few.count} sandboxes: ${few[w][key].toFixed(1)} ms | ${(many[w][key] / few[w][key]).toFixed(2)}x | (context) | |`);
  }
};
row('one nft run: an apply (median of RUNS, half of a run with two)', 'apply');
row('one nft run: an update of the entries alone, the same shape (a fill; median of RUNS, half of a run with two)', 'fill');
row('one nft run: a DNS-learned address', 'learn');
row('one nft run: a removal and the same sandbox applied again', 'remove');
