// The agent image's build id: what names `sbx/agent:<build>`, so it must change with the bundles
// the image carries and stay put otherwise.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AGENT_FILES, agentBuildId, agentImageTag } from '../../src/api/agent-image.ts';
import { agentBundle } from '../../src/api/agent-build.ts';
import { RuntimeError } from '../../src/core/errors.ts';

const scratch = mkdtempSync(join(tmpdir(), 'sbx-agent-id-'));
after(() => rmSync(scratch, { recursive: true, force: true }));

/** A dist/ directory with the agent's bundles, `cli.cjs` holding `cli`. */
function dist(name: string, cli: string): string {
  const dir = join(scratch, name, 'dist');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(scratch, name, 'package.json'), '{"version":"1.2.3"}');
  for (const f of AGENT_FILES) writeFileSync(join(dir, f), f === 'cli.cjs' ? cli : `// ${f}\n`);
  return dir;
}

describe('agent build id', () => {
  it('is 12 hex digits, and names the tag', () => {
    const id = agentBuildId(dist('a', 'one'));
    assert.match(id, /^[0-9a-f]{12}$/);
    assert.equal(agentImageTag(id), `sbx/agent:${id}`);
  });

  it('is the same for the same bytes (in another directory too)', () => {
    assert.equal(agentBuildId(dist('b', 'same')), agentBuildId(dist('c', 'same')));
  });

  it('changes when a bundle changes', () => {
    assert.notEqual(agentBuildId(dist('d', 'one')), agentBuildId(dist('e', 'two')));
    const other = dist('f', 'one');
    writeFileSync(join(other, 'relay.cjs'), '// another relay\n');
    assert.notEqual(agentBuildId(other), agentBuildId(dist('g', 'one')));
  });

  it('changes with the version beside dist/', () => {
    const dir = dist('h', 'one');
    writeFileSync(join(scratch, 'h', 'package.json'), '{"version":"9.9.9"}');
    assert.notEqual(agentBuildId(dir), agentBuildId(dist('i', 'one')));
  });

  it('reads the bundles once per process', () => {
    const dir = dist('j', 'one');
    const first = agentBuildId(dir);
    writeFileSync(join(dir, 'cli.cjs'), 'changed after the first read');
    assert.equal(agentBuildId(dir), first);
  });

  it('says to build when a bundle is missing', () => {
    const dir = dist('k', 'one');
    rmSync(join(dir, 'egress-worker.cjs'));
    assert.throws(() => agentBuildId(dir), (e: Error) => e instanceof RuntimeError && /egress-worker\.cjs.*npm run build/.test(e.message));
  });

  it('is found from the real dist/ without arguments', () => assert.match(agentBuildId(), /^[0-9a-f]{12}$/));

  // A stand-in for setup's build (core/built-nginx.ts): root-owned only when the test runs as root,
  // and under /run (root's 0755), since every directory up to / must be root-only too (not /tmp).
  const asRoot = process.getuid?.() === 0;
  const safe = asRoot ? mkdtempSync('/run/sbx-agent-nginx-') : scratch;
  after(() => rmSync(safe, { recursive: true, force: true }));
  function nginxDir(name: string, revision: string, mode = 0o755): string {
    const dir = join(safe, name, 'nginx');
    mkdirSync(join(dir, 'sbin'), { recursive: true });
    writeFileSync(join(dir, 'sbin', 'nginx'), '#!/bin/sh\n');
    chmodSync(join(dir, 'sbin', 'nginx'), mode);
    writeFileSync(join(dir, 'REVISION'), revision);
    return dir;
  }

  it('changes with the built nginx (the agent image carries it): there or not, and its revision', { skip: !asRoot && 'needs root-owned files' }, () => {
    const d = dist('l', 'one');
    const none = agentBuildId(d, join(scratch, 'no-nginx-here'));
    const a = agentBuildId(d, nginxDir('m', '1.26.3-3+deb13u1'));
    assert.notEqual(a, none);
    assert.equal(agentBuildId(d, nginxDir('n', '1.26.3-3+deb13u1')), a, 'the same revision in another directory');
    assert.notEqual(agentBuildId(d, nginxDir('o', '1.26.3-3+deb13u2')), a);
    assert.deepEqual(agentBundle(d, nginxDir('p', 'r')).nginx.map((f) => f.name), ['nginx/sbin/nginx', 'nginx/REVISION']);
  });

  it('leaves out a built nginx that others than root could have replaced (group- or world-writable)', { skip: !asRoot && 'needs root-owned files' }, () => {
    const d = dist('q', 'one');
    assert.deepEqual(agentBundle(d, nginxDir('r', 'x', 0o775)).nginx, []);
    assert.deepEqual(agentBundle(d, nginxDir('s', 'x', 0o757)).nginx, []);
    assert.equal(agentBuildId(d, nginxDir('t', 'x', 0o775)), agentBuildId(d, join(scratch, 'no-nginx-here')));
  });

  it('leaves out a built nginx that is a symlink, or in a directory others may write (a swap on the way)', { skip: !asRoot && 'needs root-owned files' }, () => {
    const d = dist('u', 'one');
    const linked = nginxDir('v', 'x');
    rmSync(join(linked, 'sbin', 'nginx'));
    symlinkSync('/bin/true', join(linked, 'sbin', 'nginx'));
    assert.deepEqual(agentBundle(d, linked).nginx, []);
    const open = nginxDir('w', 'x');
    chmodSync(join(open, 'sbin'), 0o777);
    assert.deepEqual(agentBundle(d, open).nginx, []);
    const inTmp = join(scratch, 'x', 'nginx'); // under /tmp (1777): not root-only
    mkdirSync(join(inTmp, 'sbin'), { recursive: true });
    writeFileSync(join(inTmp, 'sbin', 'nginx'), '#!/bin/sh\n', { mode: 0o755 });
    writeFileSync(join(inTmp, 'REVISION'), 'x');
    assert.deepEqual(agentBundle(d, inTmp).nginx, []);
    assert.equal(agentBundle(d, nginxDir('y', 'x')).nginx.length, 2, 'control: the same under /run is taken');
  });

  it("carries node-forge from the real dist/'s node_modules (the agent's gateway makes its sbx CA with it), its entry among its files", () => {
    const names = agentBundle().modules.map((f) => f.name);
    assert.ok(names.includes('node_modules/node-forge/package.json'));
    assert.ok(names.includes('node_modules/node-forge/lib/index.js'));
  });
});
