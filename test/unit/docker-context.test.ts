import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyDockerContext, currentContext } from '../../src/runtime/docker-context.ts';
import { chooseMode } from '../../src/api/sbx.ts';

function dockerConfig(current: string | undefined, contexts: Record<string, { host: string; tls?: boolean; skip?: boolean }>): string {
  const dir = mkdtempSync(join(tmpdir(), 'sbx-dockercfg-'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(current ? { currentContext: current } : {}));
  for (const [name, c] of Object.entries(contexts)) {
    const id = createHash('sha256').update(name).digest('hex');
    mkdirSync(join(dir, 'contexts', 'meta', id), { recursive: true });
    writeFileSync(join(dir, 'contexts', 'meta', id, 'meta.json'), JSON.stringify({ Name: name, Endpoints: { docker: { Host: c.host, SkipTLSVerify: !!c.skip } } }));
    if (c.tls) {
      mkdirSync(join(dir, 'contexts', 'tls', id, 'docker'), { recursive: true });
      writeFileSync(join(dir, 'contexts', 'tls', id, 'docker', 'ca.pem'), 'x');
    }
  }
  return dir;
}

describe('docker context', () => {
  it('uses the current context of the docker config, as the docker CLI does', () => {
    const dir = dockerConfig('remote', { remote: { host: 'tcp://engine.example:2376', tls: true } });
    try {
      const env: NodeJS.ProcessEnv = { DOCKER_CONFIG: dir };
      assert.deepEqual(currentContext(env), { name: 'remote', host: 'tcp://engine.example:2376', certPath: join(dir, 'contexts', 'tls', createHash('sha256').update('remote').digest('hex'), 'docker') });
      applyDockerContext(env);
      assert.equal(env.DOCKER_HOST, 'tcp://engine.example:2376');
      assert.equal(env.DOCKER_TLS_VERIFY, '1');
      assert.equal(chooseMode(env, 0), 'agent');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('DOCKER_CONTEXT picks another one; DOCKER_HOST wins over both; default means the local engine', () => {
    const dir = dockerConfig('default', { other: { host: 'unix:///tmp/other.sock' } });
    try {
      assert.equal(currentContext({ DOCKER_CONFIG: dir }), undefined);
      assert.equal(currentContext({ DOCKER_CONFIG: dir, DOCKER_CONTEXT: 'other' })?.host, 'unix:///tmp/other.sock');
      assert.equal(currentContext({ DOCKER_CONFIG: dir, DOCKER_CONTEXT: 'other', DOCKER_HOST: 'unix:///x.sock' }), undefined);
      const env: NodeJS.ProcessEnv = { DOCKER_CONFIG: dir, DOCKER_CONTEXT: 'other' };
      applyDockerContext(env);
      assert.equal(env.DOCKER_TLS_VERIFY, undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("the context alone says TLS: its files mean verified TLS, SkipTLSVerify means DOCKER_TLS; the environment's TLS settings go", () => {
    const dir = dockerConfig(undefined, { files: { host: 'tcp://a:2376', tls: true }, skip: { host: 'tcp://b:2376', skip: true }, plain: { host: 'tcp://c:2375' } });
    try {
      const stale = { DOCKER_TLS_VERIFY: '1', DOCKER_TLS: '1', DOCKER_CERT_PATH: '/elsewhere' };
      const files: NodeJS.ProcessEnv = { DOCKER_CONFIG: dir, DOCKER_CONTEXT: 'files', DOCKER_TLS: '1' };
      applyDockerContext(files);
      assert.equal(files.DOCKER_TLS_VERIFY, '1');
      assert.equal(files.DOCKER_TLS, undefined);
      const skip: NodeJS.ProcessEnv = { DOCKER_CONFIG: dir, DOCKER_CONTEXT: 'skip', ...stale };
      applyDockerContext(skip);
      assert.deepEqual([skip.DOCKER_HOST, skip.DOCKER_TLS, skip.DOCKER_TLS_VERIFY, skip.DOCKER_CERT_PATH], ['tcp://b:2376', '1', undefined, undefined]);
      const plain: NodeJS.ProcessEnv = { DOCKER_CONFIG: dir, DOCKER_CONTEXT: 'plain', ...stale };
      applyDockerContext(plain);
      assert.deepEqual([plain.DOCKER_HOST, plain.DOCKER_TLS, plain.DOCKER_TLS_VERIFY, plain.DOCKER_CERT_PATH], ['tcp://c:2375', undefined, undefined, undefined]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a context that does not exist is a usage error naming it', () => {
    const dir = dockerConfig('gone', {});
    try {
      assert.throws(() => currentContext({ DOCKER_CONFIG: dir }), (e: Error & { exitCode?: number }) => e.exitCode === 2 && /docker context "gone".*does not exist/.test(e.message));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('host mode only for root on the default socket', () => {
    assert.equal(chooseMode({}, 0), 'host');
    assert.equal(chooseMode({ DOCKER_HOST: 'unix:///var/run/docker.sock' }, 0), 'host');
    assert.equal(chooseMode({}, 1000), 'agent');
    assert.equal(chooseMode({ DOCKER_HOST: 'tcp://h:2375' }, 0), 'agent');
    assert.equal(chooseMode({ SBX_AGENT: '1' }, 0), 'agent');
    assert.equal(chooseMode({ SBX_AGENT: '0' }, 1000), 'host');
  });
});
