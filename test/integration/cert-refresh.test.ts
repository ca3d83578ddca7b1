// HTTPS certificates renewed while the gateway runs, on both engines (nginx, and the Node
// engine's TLS front): a certificate of the user's own replaced on disk (as certbot does) is
// served within seconds, without a restart; a half-replaced pair (a certificate without its key)
// is not taken (the served one stays, and a real client keeps working), nor is one for other names;
// sbx's own certificate near
// its end is made again and served. SBX_TLS_CHECK_MS makes the gateway look every 300 ms.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { eventually, run, sleep, World } from '../helpers.ts';
import { userCertificate } from '../user-cert.ts';

const scratch = mkdtempSync(join(tmpdir(), 'sbx-cert-refresh-'));
after(() => rmSync(scratch, { recursive: true, force: true }));
const DAY = 86_400_000;

/** The SHA-256 fingerprint of the certificate the gateway presents. */
function served(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'x.sbx.localhost', rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.end();
    });
    s.on('error', reject);
  });
}
const fingerprint = (path: string) => run('openssl', ['x509', '-noout', '-fingerprint', '-sha256', '-in', path]).then((r) => r.stdout.trim().split('=')[1]!);

/** curl with this CA: the HTTP status (0: TLS refused). */
async function curlStatus(port: number, ca: string): Promise<number> {
  const r = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '5', '--cacert', ca, '--resolve', `x.sbx.localhost:${port}:127.0.0.1`, `https://x.sbx.localhost:${port}/`]);
  return Number(r.stdout);
}

for (const engine of ['nginx', 'node'] as const) {
  describe(`certificates renewed while the gateway runs (${engine} engine)`, () => {
    const engineEnv: Record<string, string> = engine === 'node' ? { SBX_GATEWAY_ENGINE: 'node' } : {};
    const live = mkdtempSync(join(scratch, 'live-'));
    const a = userCertificate(scratch, new Date(Date.now() - DAY), new Date(Date.now() + 60 * DAY));
    const b = userCertificate(scratch, new Date(Date.now() - DAY), new Date(Date.now() + 60 * DAY));
    const certPath = join(live, 'cert.pem');
    const keyPath = join(live, 'key.pem');
    copyFileSync(a.cert, certPath);
    copyFileSync(a.key, keyPath);
    const user = new World({ ...engineEnv, SBX_GATEWAY_TLS: '1', SBX_TLS_CERT: certPath, SBX_TLS_KEY: keyPath, SBX_TLS_CHECK_MS: '300' });
    after(() => user.cleanup());
    let port = 0;
    /** Swaps the gateway has finished (the old workers, which served the old pair, take no more connections). */
    const swaps = async () => ((await user.gatewayLog()).match(/tls: serving a new certificate/g) ?? []).length;

    it('SBX_TLS_CERT replaced on disk: the new certificate is served within seconds, without a restart; clients that trust only the new CA get through, the old CA\'s are refused', async () => {
      const started = await user.json(['gateway', 'start']);
      port = user.gatewayPort();
      assert.equal(await served(port), await fingerprint(a.cert));
      assert.notEqual(await curlStatus(port, a.caPath), 0, 'control: the first CA is trusted');
      copyFileSync(b.key, keyPath);
      copyFileSync(b.cert, certPath);
      // Served by the new workers, and the swap done (the old workers, which served a, take no
      // more connections): a connection may meet a new worker before the old ones are told to go.
      await eventually(async () => (await served(port)) === (await fingerprint(b.cert)) && (await swaps()) >= 1, 'the new certificate served', 10_000);
      assert.notEqual(await curlStatus(port, b.caPath), 0);
      assert.equal(await curlStatus(port, a.caPath), 0, 'the old CA no longer verifies it');
      assert.equal(user.gatewayPort(), port);
      assert.equal((await user.json(['gateway', 'status'])).pid, started.pid, 'the same gateway process');
      assert.match(await user.gatewayLog(), /tls: serving a new certificate/);
    });

    it('attack on the swap: a certificate whose key is not there yet (half replaced) is not taken, also when nginx reloads for a route meanwhile: the served one stays and clients keep working; once the key follows, it is served', async () => {
      const c = userCertificate(scratch, new Date(Date.now() - DAY), new Date(Date.now() + 60 * DAY));
      copyFileSync(c.cert, certPath); // the key is still b's
      await sleep(1500);
      assert.equal(await served(port), await fingerprint(b.cert), 'b is still served');
      assert.notEqual(await curlStatus(port, b.caPath), 0);
      assert.match(await user.gatewayLog(), /tls: keeping the certificate served: /);
      // Routes change meanwhile (a sandbox with a port comes and goes: nginx reloads): nginx reads
      // the gateway's checked copies, not these files, so HTTPS stays up on the same gateway.
      const pid = (await user.json(['gateway', 'status'])).pid;
      await user.json(['create', '--name', 'web', '-p', '8000']);
      await sleep(800);
      assert.equal((await user.sbx(['rm', '-f', 'web'])).code, 0);
      assert.equal((await user.json(['gateway', 'status'])).pid, pid, 'the gateway did not stop');
      assert.equal(await served(port), await fingerprint(b.cert), 'b is still served after the reload');
      assert.notEqual(await curlStatus(port, b.caPath), 0);
      copyFileSync(c.key, keyPath);
      await eventually(async () => (await served(port)) === (await fingerprint(c.cert)) && (await swaps()) >= 2, 'c served once its key is there', 10_000);
    });

    it('attack on the swap: a certificate that does not cover the sandboxes\' names (another domain) is not taken: the served one stays, the log names what it would lose; one that covers them is taken (control)', async () => {
      const current = await served(port);
      const other = userCertificate(scratch, new Date(Date.now() - DAY), new Date(Date.now() + 60 * DAY), ['*.other.test']);
      copyFileSync(other.key, keyPath);
      copyFileSync(other.cert, certPath);
      await eventually(async () => /tls: keeping the certificate served: the new certificate does not cover 8000-sbx-url\.sbx\.localhost, which the one served does/.test(await user.gatewayLog()), 'the refusal logged', 10_000);
      assert.equal(await served(port), current, 'the covering certificate is still served');
      const good = userCertificate(scratch, new Date(Date.now() - DAY), new Date(Date.now() + 60 * DAY), ['*.sbx.localhost', '*.other.test']);
      copyFileSync(good.key, keyPath);
      copyFileSync(good.cert, certPath);
      await eventually(async () => (await served(port)) === (await fingerprint(good.cert)) && (await swaps()) >= 3, 'the covering one served', 10_000);
      assert.notEqual(await curlStatus(port, good.caPath), 0);
    });

    it('port expose --domain is judged against the certificate served, not one on disk that was refused: a name the served one covers is taken, one it does not is refused (exit 2)', async () => {
      // Served now: *.sbx.localhost and *.other.test (the test above). A name under other.test routes here.
      await user.json(['create', '--name', 'site', '--', 'python3', '-m', 'http.server', '8000']);
      try {
        await user.json(['port', 'expose', 'site', '8000', '--domain', 'app.other.test']);
        const narrow = userCertificate(scratch, new Date(Date.now() - DAY), new Date(Date.now() + 60 * DAY), ['*.sbx.localhost']);
        copyFileSync(narrow.key, keyPath);
        copyFileSync(narrow.cert, certPath);
        await eventually(async () => /does not cover app\.other\.test, which the one served does/.test(await user.gatewayLog()), 'the narrower certificate refused', 10_000);
        const covered = await user.sbx(['port', 'expose', 'site', '8001', '--domain', 'more.other.test']);
        assert.equal(covered.code, 0, covered.stderr);
        const uncovered = await user.sbx(['port', 'expose', 'site', '8002', '--domain', 'app.elsewhere.test']);
        assert.equal(uncovered.code, 2, 'control: a name the served certificate does not cover');
      } finally {
        await user.sbx(['rm', '-f', 'site']);
      }
    });

    it('sbx\'s own certificate near its end (10 days left) is made again and served, signed by the same CA', async () => {
      const own = new World({ ...engineEnv, SBX_GATEWAY_TLS: '1', SBX_TLS_CHECK_MS: '300' });
      try {
        await own.json(['gateway', 'start']);
        const p = own.gatewayPort();
        const dir = join(own.home, 'tls');
        const ca = join(dir, 'ca', 'sbx.localhost', 'ca.pem');
        const first = await served(p);
        // The same key, a certificate of the same CA for the same names, with 10 days left.
        const ext = join(scratch, `ext-${engine}`);
        writeFileSync(ext, 'subjectAltName=DNS:*.sbx.localhost,DNS:sbx.localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n');
        const csr = join(scratch, `csr-${engine}`);
        const short = join(scratch, `short-${engine}.pem`);
        assert.equal((await run('openssl', ['req', '-new', '-key', join(dir, 'server', 'key.pem'), '-subj', '/CN=*.sbx.localhost', '-out', csr])).code, 0);
        const signed = await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', join(dir, 'ca', 'sbx.localhost', 'ca-key.pem'), '-days', '10', '-set_serial', '77', '-extfile', ext, '-out', short]);
        assert.equal(signed.code, 0, signed.stderr);
        writeFileSync(join(dir, 'server', 'cert.pem'), readFileSync(short));
        // The gateway makes a new one (397 days), replacing the short one, and serves it.
        await eventually(async () => {
          const now = await served(p);
          return now !== first && now !== (await fingerprint(short)) && now === (await fingerprint(join(dir, 'server', 'cert.pem')));
        }, 'a new certificate served', 10_000);
        const days = await run('openssl', ['x509', '-noout', '-checkend', String(300 * 86_400), '-in', join(dir, 'server', 'cert.pem')]);
        assert.equal(days.code, 0, 'the new one lasts more than 300 days');
        assert.notEqual(await curlStatus(p, ca), 0, 'a client trusting sbx\'s CA gets through');
      } finally {
        await own.cleanup();
      }
    });
  });
}
