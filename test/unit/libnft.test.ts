// runNft through libnftables in this process (libnft.ts, the gateway's path), in scratch network
// namespaces of the test's own: the same script gives the same ruleset as `nft -f -`, a script
// is one transaction, a refusal keeps nft's words, and concurrent runs are serialised.
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = process.getuid?.() === 0;
const netns = [`sbxlibnft${process.pid}a`, `sbxlibnft${process.pid}b`];
const nftModule = fileURLToPath(new URL('../../src/net/nft.ts', import.meta.url));

/** Runs `steps` (an async function body with runNft and keepNftReady in scope) in a node inside `ns`. */
function inNetns(ns: string, steps: string, env: Record<string, string> = {}): Record<string, unknown> {
  const code = `import { keepNftReady, runNft } from ${JSON.stringify(nftModule)};
const out = {};
try { ${steps} } catch (err) { out.thrown = String(err.message); }
process.stdout.write(JSON.stringify(out));
process.exit(0);`;
  const base = { ...process.env };
  delete base.SBX_NFT;
  delete base.SBX_NFT_LIBRARY;
  const text = execFileSync('nsenter', [`--net=/var/run/netns/${ns}`, process.execPath, '--input-type=module', '-e', code], { encoding: 'utf8', env: { ...base, ...env } });
  return JSON.parse(text) as Record<string, unknown>;
}
const ruleset = (ns: string) => execFileSync('nsenter', [`--net=/var/run/netns/${ns}`, 'nft', 'list', 'ruleset'], { encoding: 'utf8' });

// Sets, a verdict map, a chain with a jump: the kinds of objects sbx's scripts make.
const script = `add table inet t
add set inet t allowed { type ipv4_addr; flags interval; }
add element inet t allowed { 10.9.0.0/24, 192.0.2.7 }
add chain inet t sandbox
add rule inet t sandbox ip daddr @allowed accept
add rule inet t sandbox reject
add map inet t by_bridge { type ifname : verdict; }
add chain inet t forward { type filter hook forward priority 0; policy accept; }
add rule inet t forward iifname vmap @by_bridge
add element inet t by_bridge { "sbx-x" : jump sandbox }
`;

before(() => {
  if (!root) return;
  for (const ns of netns) execFileSync('ip', ['netns', 'add', ns]);
});
after(() => {
  if (!root) return;
  for (const ns of netns) execFileSync('ip', ['netns', 'del', ns]);
});

it('the gateway path loads libnftables, and gives the ruleset that nft -f - gives', { skip: !root && 'needs root (nftables)' }, () => {
  const lib = inNetns(netns[0]!, `out.how = await keepNftReady(true); await runNft(${JSON.stringify(script)}, 'test');`);
  assert.equal(lib.thrown, undefined);
  assert.equal(lib.how, 'libnftables in this process');
  const proc = inNetns(netns[1]!, `out.how = await keepNftReady(true); await runNft(${JSON.stringify(script)}, 'test');`, { SBX_NFT_LIBRARY: '0' });
  assert.equal(proc.thrown, undefined);
  assert.match(String(proc.how), /^an nft process per run \(SBX_NFT_LIBRARY=0\)/);
  assert.equal(ruleset(netns[0]!), ruleset(netns[1]!));
  assert.match(ruleset(netns[0]!), /iifname vmap @by_bridge/);
});

it("a refused script changes nothing, and the error is nft's own", { skip: !root && 'needs root (nftables)' }, () => {
  const before = ruleset(netns[0]!);
  // The first two commands are fine; the third names a chain that does not exist.
  const bad = 'add element inet t allowed { 10.8.0.1 }\nadd chain inet t extra\nadd rule inet t nowhere accept\n';
  const r = inNetns(netns[0]!, `out.how = await keepNftReady(true); await runNft(${JSON.stringify(bad)}, 'could not test');`);
  assert.equal(r.how, 'libnftables in this process');
  assert.match(String(r.thrown), /^could not test: Error: .*No such file or directory/);
  assert.equal(ruleset(netns[0]!), before, 'nothing of the refused script is in force');
  // A syntax error too, and the context still works after both.
  const r2 = inNetns(netns[0]!, `await keepNftReady(true);
try { await runNft('add rule inet t sandbox bogus\\n', 'could not test'); } catch (err) { out.syntax = err.message; }
await runNft('add element inet t allowed { 10.8.0.2 }\\n', 'test');`);
  assert.equal(r2.thrown, undefined);
  assert.match(String(r2.syntax), /^could not test: Error: syntax error/);
  assert.match(ruleset(netns[0]!), /10\.8\.0\.2/);
});

it('a script with a NUL is refused whole (libnftables would stop reading at it)', { skip: !root && 'needs root (nftables)' }, () => {
  const before = ruleset(netns[0]!);
  const r = inNetns(netns[0]!, `out.how = await keepNftReady(true); await runNft('add chain inet t early\\n\\0add chain inet t late\\n', 'could not test');`);
  assert.equal(r.how, 'libnftables in this process');
  assert.equal(r.thrown, 'could not test: the nft script holds a NUL character');
  assert.equal(ruleset(netns[0]!), before);
});

it('runs asked for at once are carried out one at a time, each whole', { skip: !root && 'needs root (nftables)' }, () => {
  const r = inNetns(netns[0]!, `await keepNftReady(true);
const runs = [];
for (let i = 0; i < 40; i++) runs.push(runNft(\`add element inet t allowed { 10.7.\${i}.1 }\\nadd chain inet t c\${i}\\n\`, 'test'));
// One refused among them: the others are not affected.
runs.push(runNft('add rule inet t nowhere accept\\n', 'refused').catch((err) => (out.refused = err.message)));
await Promise.all(runs);`);
  assert.equal(r.thrown, undefined);
  assert.match(String(r.refused), /^refused: Error:/);
  const text = ruleset(netns[0]!);
  for (let i = 0; i < 40; i++) {
    assert.match(text, new RegExp(`10\\.7\\.${i}\\.1\\b`));
    assert.match(text, new RegExp(`chain c${i} \\{`));
  }
});

it("the library's netlink socket is not inherited by the children the gateway starts later", { skip: !root && 'needs root (nftables)' }, () => {
  const r = inNetns(netns[0]!, `const { readdirSync, readlinkSync, readFileSync } = await import('node:fs');
const { spawnSync } = await import('node:child_process');
out.how = await keepNftReady(true);
// Netfilter netlink sockets (protocol 12) of this network namespace, by inode.
const nfnetlink = new Set(readFileSync('/proc/net/netlink', 'utf8').trim().split('\\n').slice(1).map((l) => l.trim().split(/\\s+/)).filter((f) => f[1] === '12').map((f) => f.at(-1)));
const links = (pid) => readdirSync('/proc/' + pid + '/fd').map((fd) => { try { return readlinkSync('/proc/' + pid + '/fd/' + fd); } catch { return ''; } });
const ours = links('self').filter((l) => nfnetlink.has(l.replace(/^socket:\\[(\\d+)\\]$/, '$1')));
out.ours = ours.length;
const child = spawnSync('sh', ['-c', 'for f in /proc/$$/fd/*; do readlink "$f"; done'], { encoding: 'utf8' });
out.inherited = child.stdout.trim().split('\\n').filter((l) => ours.includes(l));`);
  assert.equal(r.thrown, undefined);
  assert.equal(r.how, 'libnftables in this process');
  assert.ok(Number(r.ours) >= 1, 'the library holds a netfilter netlink socket');
  assert.deepEqual(r.inherited, [], 'a child holds none of them');
});

it('a change made by another process between two runs is seen (no stale cache)', { skip: !root && 'needs root (nftables)' }, () => {
  // The library adds a chain, another nft deletes it, and the library then refers to it: the
  // kernel's answer wins, not what the context remembered. And the other way round.
  const r = inNetns(netns[0]!, `const { execFileSync } = await import('node:child_process');
await keepNftReady(true);
await runNft('add chain inet t gone\\nadd chain inet t kept\\n', 'test');
execFileSync('nft', ['delete chain inet t gone']);
try { await runNft('add rule inet t gone accept\\n', 'stale'); out.stale = 'applied'; } catch (err) { out.stale = err.message; }
execFileSync('nft', ['add chain inet t made']);
await runNft('add rule inet t made accept\\n', 'test');`);
  assert.equal(r.thrown, undefined);
  assert.match(String(r.stale), /^stale: Error:/);
  assert.doesNotMatch(ruleset(netns[0]!), /chain gone/);
  assert.match(ruleset(netns[0]!), /chain made \{[^}]*accept/);
});

it('SBX_NFT (a stand-in nft) keeps the process path', { skip: !root && 'needs root (nftables)' }, () => {
  const r = inNetns(netns[1]!, `out.how = await keepNftReady(true);`, { SBX_NFT: 'nft' });
  assert.match(String(r.how), /^an nft process per run \(SBX_NFT is set\)/);
});
