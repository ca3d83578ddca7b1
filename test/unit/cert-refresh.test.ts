// The gateway's certificate refresher (src/gateway/cert-refresh.ts), with stand-ins for loading
// and serving: a new certificate that drops a name clients use is refused while the served one
// lasts, and taken (with a log line) once the served one is within a week of its end; partial
// wildcards (sbx-*.domain) do not count as covering a sandbox URL's name.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lostNames, refreshCertificate, type CertificatePair } from '../../src/gateway/cert-refresh.ts';
import { userCertificate } from '../user-cert.ts';

const scratch = mkdtempSync(join(tmpdir(), 'sbx-cert-refresh-unit-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const DAY = 86_400_000;
const pair = (days: number, names: string[]): CertificatePair => {
  const c = userCertificate(scratch, new Date(Date.now() - DAY), new Date(Date.now() + days * DAY), names);
  return { cert: readFileSync(c.cert, 'utf8'), key: readFileSync(c.key, 'utf8') };
};
const NAMES = ['8000-sbx-url.sbx.localhost', 'sbx.localhost'];

/** Runs the refresher until it has tried once: what it served, and what it logged. */
async function oneRound(served: CertificatePair, next: CertificatePair): Promise<{ applied: boolean; log: string[] }> {
  const log: string[] = [];
  let applied = false;
  const stop = refreshCertificate({ served, load: async () => next, apply: async () => void (applied = true), names: () => NAMES, log: (l) => log.push(l), intervalMs: 20 });
  await new Promise((r) => setTimeout(r, 120));
  stop();
  return { applied, log };
}

test('a new certificate that drops the sandboxes\' names is refused while the served one lasts; taken, with a line, within a week of its end', async () => {
  const other = pair(90, ['*.other.test']);
  const lasting = await oneRound(pair(60, ['*.sbx.localhost']), other);
  assert.equal(lasting.applied, false);
  assert.match(lasting.log[0]!, /keeping the certificate served: the new certificate does not cover 8000-sbx-url\.sbx\.localhost/);
  assert.equal(lasting.log.length, 1, 'logged once');
  const ending = await oneRound(pair(3, ['*.sbx.localhost']), other);
  assert.equal(ending.applied, true);
  assert.match(ending.log.join('\n'), /ends within a week: taking the new one, which does not cover 8000-sbx-url\.sbx\.localhost/);
  // Control: one that covers them is taken at once.
  assert.equal((await oneRound(pair(60, ['*.sbx.localhost']), pair(90, ['*.sbx.localhost', '*.other.test']))).applied, true);
});

test('lostNames: a partial wildcard (*-sbx-url.sbx.localhost) does not cover a sandbox URL\'s name', () => {
  const full = pair(60, ['*.sbx.localhost', 'sbx.localhost']).cert;
  const partial = pair(60, ['*-sbx-url.sbx.localhost', 'sbx.localhost']).cert;
  assert.deepEqual(lostNames(full, partial, NAMES), ['8000-sbx-url.sbx.localhost']);
  assert.deepEqual(lostNames(full, full, NAMES), []);
});
