// The agent image's build id: what names `sbx/agent:<build>`, so it must change with the bundles
// the image carries and stay put otherwise.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
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

  it("carries node-forge from the real dist/'s node_modules (the agent's gateway makes its sbx CA with it), its entry among its files", () => {
    const names = agentBundle().modules.map((f) => f.name);
    assert.ok(names.includes('node_modules/node-forge/package.json'));
    assert.ok(names.includes('node_modules/node-forge/lib/index.js'));
  });
});
