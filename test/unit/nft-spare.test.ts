// runNft with an nft started ahead (keepNftReady: the gateway's), against a stand-in nft that
// notes when it started and what it ran.
import { after, before, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { keepNftReady, runNft } from '../../src/net/nft.ts';

const dir = mkdtempSync(join(tmpdir(), 'sbx-nft-spare-'));
const fake = join(dir, 'nft');
// Notes its start (pid and time), then reads its script and runs it: "fail" in it fails the run.
writeFileSync(fake, `#!/bin/sh\necho "$(date +%s%N)" > ${dir}/started.$$\nin=$(cat)\nprintf '%s' "$in" > ${dir}/ran.$$\ncase "$in" in *fail*) echo "Error: refused" >&2; exit 1;; esac\n`);
chmodSync(fake, 0o755);
const saved = process.env.SBX_NFT;
const startedPids = () => readdirSync(dir).filter((f) => f.startsWith('started.')).map((f) => f.slice(8));
const ranPids = () => readdirSync(dir).filter((f) => f.startsWith('ran.')).map((f) => f.slice(4));
const alive = (pid: string) => {
  try {
    process.kill(Number(pid), 0);
    return true;
  } catch {
    return false;
  }
};
const idle = () => startedPids().filter((p) => !ranPids().includes(p) && alive(p));

before(() => {
  process.env.SBX_NFT = fake;
  keepNftReady(true);
});
after(() => {
  keepNftReady(false);
  if (saved === undefined) delete process.env.SBX_NFT;
  else process.env.SBX_NFT = saved;
  rmSync(dir, { recursive: true, force: true });
});

const waitFor = async (what: string, ok: () => boolean) => {
  for (let i = 0; i < 100 && !ok(); i++) await sleep(20);
  assert.ok(ok(), what);
};

it('a run is carried out by the nft started ahead, and the next one is started after it', async () => {
  await waitFor('one nft waiting', () => idle().length === 1);
  const [waiting] = idle();
  // The end of this millisecond: Date.now() rounds down, and the spare may have started within
  // the same millisecond (its time is taken before its file appears). CI flaked on the round-down.
  const asked = (BigInt(Date.now()) + 1n) * 1_000_000n;
  await runNft('add table inet x\n', 'test');
  assert.equal(readFileSync(join(dir, `ran.${waiting}`), 'utf8'), 'add table inet x', 'the waiting one ran the script');
  assert.ok(BigInt(readFileSync(join(dir, `started.${waiting}`), 'utf8').trim()) < asked, 'it was started before the run was asked for');
  await waitFor('the next one waiting', () => idle().length === 1 && idle()[0] !== waiting);
});

it("nft's refusal is the run's error, in nft's words", async () => {
  await assert.rejects(runNft('fail\n', 'could not test'), /could not test: Error: refused/);
});

it('a waiting nft that ended (killed) is not handed out: the run starts its own', async () => {
  await waitFor('one nft waiting', () => idle().length === 1);
  process.kill(Number(idle()[0]), 'SIGKILL');
  await sleep(100);
  await runNft('add table inet y\n', 'test');
  assert.ok(ranPids().some((p) => readFileSync(join(dir, `ran.${p}`), 'utf8') === 'add table inet y'));
});

it('one killed just before it is taken (its end not seen yet): the run is done again by a process of its own', async () => {
  await waitFor('one nft waiting', () => idle().length === 1);
  process.kill(Number(idle()[0]), 'SIGKILL');
  await runNft('add table inet w\n', 'test'); // in the same tick: the spare is handed out, and fails
  assert.ok(ranPids().some((p) => readFileSync(join(dir, `ran.${p}`), 'utf8') === 'add table inet w'));
});

it('no nft at all: the run says so, as without one started ahead', async () => {
  keepNftReady(false);
  process.env.SBX_NFT = join(dir, 'missing');
  keepNftReady(true);
  await sleep(100);
  await assert.rejects(runNft('add table inet z\n', 'could not test'), /could not test: nft is not installed/);
  process.env.SBX_NFT = fake;
  keepNftReady(false);
  keepNftReady(true);
});
