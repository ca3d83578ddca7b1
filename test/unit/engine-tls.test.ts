// tcp:// engines by the docker CLI's rules (src/runtime/docker-host.ts, engine-options.ts) and
// what their TLS failures say (src/runtime/errors.ts): one line naming the engine and what to check.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { RuntimeError, UsageError } from '../../src/core/errors.ts';
import { tcpEngine } from '../../src/runtime/docker-host.ts';
import { engineClient, engineOptions } from '../../src/runtime/engine-options.ts';
import { tlsFailure, toRuntimeError } from '../../src/runtime/errors.ts';

/** A DOCKER_CERT_PATH holding the given files (their content is their name). */
function certDir(files: string[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-certs-'));
  for (const f of files) writeFileSync(join(dir, f), f);
  return dir;
}

/** Runs fn with process.env holding `env` for the DOCKER_* names (restored after). */
function withEnv<T>(env: Record<string, string>, fn: () => T): T {
  const names = ['DOCKER_HOST', 'DOCKER_TLS_VERIFY', 'DOCKER_TLS', 'DOCKER_CERT_PATH', 'DOCKER_CONFIG'];
  const saved = Object.fromEntries(names.map((n) => [n, process.env[n]]));
  for (const n of names) delete process.env[n];
  Object.assign(process.env, env);
  try {
    return fn();
  } finally {
    for (const n of names) {
      if (saved[n] === undefined) delete process.env[n];
      else process.env[n] = saved[n];
    }
  }
}

describe('when a tcp:// engine is spoken to with TLS (the docker CLI rules)', () => {
  it('DOCKER_TLS_VERIFY set to any non-empty value means TLS, verified; "0" too; empty means unset', () => {
    for (const v of ['1', 'true', 'yes', '0']) assert.deepEqual(tcpEngine({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS_VERIFY: v, DOCKER_CERT_PATH: '/c' })?.tls, { verify: true, certPath: '/c' }, v);
    assert.equal(tcpEngine({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS_VERIFY: '', DOCKER_CERT_PATH: '/c' })?.tls, undefined);
  });

  it('DOCKER_TLS alone: TLS without checking the engine; DOCKER_CERT_PATH alone or port 2376 alone: plain', () => {
    assert.deepEqual(tcpEngine({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS: '1', DOCKER_CERT_PATH: '/c' })?.tls, { verify: false, certPath: '/c' });
    assert.equal(tcpEngine({ DOCKER_HOST: 'tcp://h:2375', DOCKER_CERT_PATH: '/c' })?.tls, undefined);
    assert.equal(tcpEngine({ DOCKER_HOST: 'tcp://h:2376' })?.tls, undefined);
  });

  it('the files default to the docker config dir; a port-less host is :2375; a bare host:port is tcp; others are not ours', () => {
    assert.equal(tcpEngine({ DOCKER_HOST: 'tcp://h', DOCKER_TLS_VERIFY: '1', DOCKER_CONFIG: '/cfg' })?.tls?.certPath, '/cfg');
    assert.equal(tcpEngine({ DOCKER_HOST: 'tcp://h', DOCKER_TLS_VERIFY: '1' })?.tls?.certPath, join(homedir(), '.docker'));
    assert.deepEqual(tcpEngine({ DOCKER_HOST: 'tcp://h' }), { host: 'h', port: '2375' });
    assert.deepEqual(tcpEngine({ DOCKER_HOST: '10.0.0.5:2376' }), { host: '10.0.0.5', port: '2376' });
    for (const h of ['unix:///var/run/docker.sock', 'ssh://me@h', '']) assert.equal(tcpEngine({ DOCKER_HOST: h }), undefined, h);
  });

  it('the scheme in any case is tcp (TCP:// is TLS when asked, never plain by accident)', () => {
    assert.deepEqual(tcpEngine({ DOCKER_HOST: 'TCP://h:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: '/c' }), { host: 'h', port: '2376', tls: { verify: true, certPath: '/c' } });
  });

  it('a scheme the docker CLI does not take (http://, https://), or a bare socket path, is a usage error naming the accepted forms', () => {
    for (const h of ['http://h:2375', 'https://h:2376', 'fd://', '/var/run/docker.sock']) {
      assert.throws(() => tcpEngine({ DOCKER_HOST: h, DOCKER_TLS_VERIFY: '1' }), (err: Error) => err instanceof UsageError && err.message.startsWith(`DOCKER_HOST=${h}: `) && err.message.endsWith('expected unix://PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]'), h);
      assert.throws(() => withEnv({ DOCKER_HOST: h }, () => engineClient()), UsageError, h);
    }
  });

  it('ssh:// ignores a DOCKER_CERT_PATH left from a tcp engine, as the docker CLI does (no ENOENT on its files)', () => {
    withEnv({ DOCKER_HOST: 'ssh://me@h', DOCKER_CERT_PATH: '/nonexistent' }, () => assert.ok(engineClient()));
  });
});

describe("dockerode's options for a tcp:// engine", () => {
  it('TLS: https with ca.pem, cert.pem and key.pem read now; plain: http, whatever docker-modem would guess from the port', () => {
    const dir = certDir(['ca.pem', 'cert.pem', 'key.pem']);
    try {
      const o = engineOptions({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: dir }) as Record<string, unknown>;
      assert.equal(o.protocol, 'https');
      assert.deepEqual([String(o.ca), String(o.cert), String(o.key)], ['ca.pem', 'cert.pem', 'key.pem']);
      assert.equal(o.agent, undefined, 'verified: no agent that skips the check');
      assert.equal(engineOptions({ DOCKER_HOST: 'tcp://h:2376' })?.protocol, 'http');
      assert.equal(engineOptions({ DOCKER_HOST: 'unix:///x.sock' }), undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('no client certificate is no client certificate; half of one is an error naming the missing file', () => {
    const caOnly = certDir(['ca.pem']);
    const half = certDir(['ca.pem', 'cert.pem']);
    try {
      const o = engineOptions({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: caOnly })!;
      assert.equal(o.cert, undefined);
      assert.equal(o.key, undefined);
      assert.throws(
        () => engineOptions({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: half }),
        (e: Error) => e instanceof RuntimeError && e.exitCode === 1 && e.message.startsWith(`could not read ${join(half, 'key.pem')} (ENOENT) for the Docker engine at tcp://h:2376 over TLS`),
      );
    } finally {
      rmSync(caOnly, { recursive: true, force: true });
      rmSync(half, { recursive: true, force: true });
    }
  });

  it('a missing ca.pem is exit 1 naming it (verified); unverified (DOCKER_TLS, a context with SkipTLSVerify) needs none', () => {
    const empty = certDir([]);
    try {
      assert.throws(
        () => engineOptions({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: empty }),
        (e: Error) => e instanceof RuntimeError && e.exitCode === 1 && e.message.includes(`could not read ${join(empty, 'ca.pem')} (ENOENT)`) && !e.message.includes('\n'),
      );
      const o = engineOptions({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS: '1', DOCKER_CERT_PATH: empty }) as Record<string, unknown>;
      assert.equal(o.protocol, 'https');
      assert.equal((o.agent as { options: { rejectUnauthorized?: boolean } }).options.rejectUnauthorized, false);
    } finally {
      rmSync(empty, { recursive: true, force: true });
    }
  });

  it('the client: DOCKER_CERT_PATH without TLS, its files missing, does not throw (docker-modem alone would)', () => {
    withEnv({ DOCKER_HOST: 'tcp://h:2376', DOCKER_CERT_PATH: '/nonexistent' }, () => {
      const modem = engineClient().modem as unknown as { protocol: string; host: string; port: string };
      assert.deepEqual([modem.protocol, modem.host, modem.port], ['http', 'h', '2376']);
      assert.equal(process.env.DOCKER_CERT_PATH, '/nonexistent', 'the environment is given back');
    });
    withEnv({ DOCKER_HOST: 'tcp://h:2376', DOCKER_TLS_VERIFY: 'yes', DOCKER_CERT_PATH: '/nonexistent' }, () => {
      assert.throws(() => engineClient(), /could not read \/nonexistent\/ca\.pem \(ENOENT\)/);
    });
  });
});

describe('TLS failures, in one line naming the engine and what to check', () => {
  const env = { DOCKER_HOST: 'tcp://10.0.0.5:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: '/certs' };
  const cases: Array<[string, object, RegExp]> = [
    ['another CA', { code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' }, /^the Docker engine at tcp:\/\/10\.0\.0\.5:2376 has a certificate that \/certs\/ca\.pem did not sign \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\): DOCKER_CERT_PATH must hold/],
    ['a self-signed engine', { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' }, /did not sign \(DEPTH_ZERO_SELF_SIGNED_CERT\)/],
    ['expired', { code: 'CERT_HAS_EXPIRED' }, /not valid now \(CERT_HAS_EXPIRED\): renew it, or check this machine's clock/],
    ['another name', { code: 'ERR_TLS_CERT_ALTNAME_INVALID' }, /for another name \(ERR_TLS_CERT_ALTNAME_INVALID\): it must name 10\.0\.0\.5/],
    ['client certificate refused', { code: 'ERR_SSL_SSL/TLS_ALERT_BAD_CERTIFICATE' }, /refused this client's TLS certificate \(ERR_SSL_SSL\/TLS_ALERT_BAD_CERTIFICATE\): \/certs has no cert\.pem and key\.pem/],
    ['certificate required (TLS 1.3)', { code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' }, /refused this client's TLS certificate/],
    ['reset in the handshake', { code: 'ECONNRESET' }, /closed the connection during TLS \(ECONNRESET\): it may refuse this client's certificate; check cert\.pem and key\.pem in \/certs/],
    ['a plain port', { code: 'EPROTO', message: 'write EPROTO 4087:error:0A00010B:SSL routines:ssl3_get_record:wrong version number' }, /does not speak TLS \(EPROTO\): for a plain tcp:\/\/ engine unset DOCKER_TLS_VERIFY/],
    ['a plain port (newer OpenSSL code)', { code: 'ERR_SSL_WRONG_VERSION_NUMBER' }, /does not speak TLS/],
  ];
  for (const [what, err, expected] of cases) {
    it(what, () => {
      const line = tlsFailure(err, env);
      assert.match(line ?? '', expected);
      assert.equal(line!.split('\n').length, 1);
    });
  }

  it('plain against a TLS port: the engine says so with a 400; that is "wants TLS"', () => {
    const err = { statusCode: 400, json: { message: 'Client sent an HTTP request to an HTTPS server.' } };
    assert.match(tlsFailure(err, { DOCKER_HOST: 'tcp://h:2376' }) ?? '', /^the Docker engine at tcp:\/\/h:2376 wants TLS: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH/);
  });

  it('not TLS matters: a unix socket, or an engine error that is not about TLS, is left to the rest', () => {
    assert.equal(tlsFailure({ code: 'ECONNRESET' }, { DOCKER_HOST: 'unix:///x.sock' }), undefined);
    assert.equal(tlsFailure({ code: 'ECONNRESET' }, { DOCKER_HOST: 'tcp://h:2375' }), undefined, 'plain: a reset is not a handshake');
    assert.equal(tlsFailure({ statusCode: 404, json: { message: 'no such container' } }, env), undefined);
  });

  it('toRuntimeError: a TLS failure or an unreadable file is a RuntimeError (exit 1) of one line', () => {
    withEnv(env, () => {
      const tls = toRuntimeError({ code: 'SELF_SIGNED_CERT_IN_CHAIN' }, 'could not list containers');
      assert.ok(tls instanceof RuntimeError && tls.exitCode === 1);
      assert.match(tls.message, /^the Docker engine at tcp:\/\/10\.0\.0\.5:2376 has a certificate that \/certs\/ca\.pem did not sign/);
      const missing = Object.assign(new Error("ENOENT: no such file or directory, open '/certs/key.pem'"), { code: 'ENOENT', syscall: 'open', path: '/certs/key.pem' });
      const file = toRuntimeError(missing, 'could not list containers');
      assert.equal(file.exitCode, 1);
      assert.equal(file.message, 'could not read /certs/key.pem (ENOENT) for the Docker engine at tcp://10.0.0.5:2376: check DOCKER_CERT_PATH');
      // Control: a socket that is not there is still "no engine answers".
      const socket = toRuntimeError(Object.assign(new Error('connect ENOENT /x.sock'), { code: 'ENOENT', syscall: 'connect', address: '/x.sock' }), 'x');
      assert.match(socket.message, /^no Docker engine answers at/);
    });
  });
});
