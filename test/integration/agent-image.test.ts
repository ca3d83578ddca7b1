// The agent image on the real engine: what `ensureAgentImage` builds on top of the root image
// (scripts/setup makes it), what is inside, that an existing build is reused, and sbx's words when
// the engine lacks the root image.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { appendFileSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { AGENT_FILES, AGENT_ROOT_IMAGE, agentBuildId, agentImageTag, ensureAgentImage } from '../../src/api/agent-image.ts';
import { RuntimeError } from '../../src/core/errors.ts';
import { BUILT_NGINX, BUILT_NGINX_DIR } from '../../src/core/built-nginx.ts';
import { Runtime } from '../../src/runtime/docker.ts';
import { docker, ROOT } from '../helpers.ts';

const runtime = new Runtime();
const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const imageId = async (ref: string) => (await docker('image', 'inspect', '-f', '{{.Id}}', ref)).stdout.trim();
const scratch = mkdtempSync(join(tmpdir(), 'sbx-agent-image-'));
const extraTags: string[] = [];
let tag = '';

before(async () => {
  assert.ok(await runtime.imageExists(AGENT_ROOT_IMAGE), `${AGENT_ROOT_IMAGE} is missing: run scripts/setup (or sbx image build)`);
  tag = await ensureAgentImage(runtime);
});
after(async () => {
  for (const t of extraTags) await runtime.removeImage(t);
  rmSync(scratch, { recursive: true, force: true });
});

/** `docker run --rm` of the agent image with another entrypoint; its stdout and stderr. */
async function inAgent(entrypoint: string, ...args: string[]): Promise<string> {
  const r = await docker('run', '--rm', '--network', 'none', '--entrypoint', entrypoint, tag, ...args);
  assert.equal(r.code, 0, `${entrypoint} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout + r.stderr;
}

describe('the agent image', () => {
  it('is tagged with this build and labelled', async () => {
    assert.equal(tag, agentImageTag(agentBuildId()));
    const labels = await runtime.imageLabels(tag);
    assert.equal(labels?.['sbx.image'], 'agent');
    assert.equal(labels?.['sbx.version'], version);
    assert.equal(labels?.['sbx.build'], agentBuildId());
  });

  it('runs the CLI bundle with its own Node', async () => {
    assert.equal((await inAgent('/usr/local/bin/node', '/opt/sbx/cli.cjs', '--version')).trim(), version);
    const r = await docker('image', 'inspect', '-f', '{{json .Config.Entrypoint}} {{json .Config.Cmd}}', tag);
    assert.equal(r.stdout.trim(), '["/usr/local/bin/node","/opt/sbx/cli.cjs"] ["agent","run"]');
    assert.deepEqual((await inAgent('ls', '/opt/sbx')).split('\n').filter(Boolean), [...AGENT_FILES, 'node_modules'].sort());
  });

  it('loads koffi and libnftables (nft rules and the network log in its own process)', async () => {
    const script = "const k = require('module').createRequire('/opt/sbx/cli.cjs')('koffi'); console.log(typeof k.load('libnftables.so.1').func)";
    assert.equal((await inAgent('/usr/local/bin/node', '-e', script)).trim(), 'function');
  });

  for (const [tool, args, shows] of [
    ['nft', ['--version'], /nftables v/],
    ['conntrack', ['--version'], /conntrack v/],
    ['nginx', ['-v'], /nginx version/],
    ['nsenter', ['--version'], /util-linux/],
    ['setpriv', ['--version'], /util-linux/],
    ['ip', ['-V'], /iproute2/],
    ['ss', ['-V'], /iproute2/],
  ] as const) {
    it(`has ${tool}`, async () => assert.match(await inAgent(tool, ...args), shows));
  }

  it('carries the nginx 1.26 that setup built here, where the gateway looks first, and it runs there (its libraries are in the root image)', { skip: !existsSync(BUILT_NGINX) && 'nginx 1.26 is not built here' }, async () => {
    assert.match(await inAgent(BUILT_NGINX, '-v'), /nginx version: nginx\/1\.26\./);
    assert.equal(await inAgent('cat', join(BUILT_NGINX_DIR, 'REVISION')), readFileSync(join(BUILT_NGINX_DIR, 'REVISION'), 'utf8'));
    assert.equal((await inAgent('stat', '-c', '%u %a', BUILT_NGINX)).trim(), '0 755', 'root\'s, as findNginx requires');
  });

  it('has the system user sbx-gateway with its own group (not root, not nogroup)', async () => {
    const id = await inAgent('id', 'sbx-gateway');
    const [, uid, gid] = /uid=(\d+)\(sbx-gateway\) gid=(\d+)\(sbx-gateway\)/.exec(id) ?? [];
    assert.ok(uid && gid, id);
    assert.ok(Number(uid) > 0 && Number(gid) > 0 && Number(gid) !== 65534, id);
    assert.match(await inAgent('getent', 'group', 'nogroup'), /^nogroup:x:65534:/);
  });

  it('is reused by the next call: one inspect, no build', async () => {
    const before = await imageId(tag);
    const started = performance.now();
    assert.equal(await ensureAgentImage(runtime), tag);
    assert.ok(performance.now() - started < 1000, `took ${performance.now() - started} ms`);
    assert.equal(await imageId(tag), before);
  });

  it('gets a new tag, built in seconds on the same root, when a bundle changes', async () => {
    const dist = join(scratch, 'changed', 'dist');
    mkdirSync(dist, { recursive: true });
    copyFileSync(join(ROOT, 'package.json'), join(dirname(dist), 'package.json'));
    for (const f of AGENT_FILES) copyFileSync(join(ROOT, 'dist', f), join(dist, f));
    appendFileSync(join(dist, 'relay.cjs'), '\n// another build\n');
    const started = performance.now();
    const other = await ensureAgentImage(runtime, { distDir: dist });
    extraTags.push(other);
    assert.notEqual(other, tag);
    assert.equal(other, agentImageTag(agentBuildId(dist)));
    assert.ok(performance.now() - started < 60_000, `took ${performance.now() - started} ms`);
    const r = await docker('run', '--rm', '--network', 'none', '--entrypoint', 'tail', other, '-n', '1', '/opt/sbx/relay.cjs');
    assert.equal(r.stdout.trim(), '// another build');
  });

  it('says what to do when the engine has no root image', async () => {
    await assert.rejects(ensureAgentImage(runtime, { force: true, rootImage: 'sbx/agent-root:missing-in-test' }), (e: Error) => {
      assert.ok(e instanceof RuntimeError);
      assert.match(e.message, /has no agent base image sbx\/agent-root:missing-in-test: run `sbx image build` on the engine's host \(needs root and debootstrap\)/);
      assert.match(e.message, /docker save sbx\/agent-root:missing-in-test \| docker -H \S+ load/);
      return true;
    });
  });
});
