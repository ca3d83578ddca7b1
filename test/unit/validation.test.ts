// Values sbx refuses in its own words before the engine sees them: CPU limits above the engine's
// CPUs, and empty egress entries (the library's side; the CLI's flags are in errors.test.ts).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { checkCpus, parseCpus } from '../../src/core/options.ts';
import { normalizePolicy } from '../../src/core/network-policy.ts';
import { UsageError } from '../../src/core/errors.ts';

describe('CPU limits against the engine', () => {
  it('accepts up to the engine\'s CPUs', () => {
    assert.equal(checkCpus(parseCpus('2'), 2), 2);
    assert.equal(checkCpus(parseCpus('0.5'), 1), 0.5);
  });
  for (const [value, ncpu] of [['999', 2], ['2.5', 2], ['2', 1]] as const) {
    it(`refuses --cpus ${value} on an engine with ${ncpu}, naming flag, value and maximum`, () =>
      assert.throws(() => checkCpus(parseCpus(value), ncpu), (e: Error) =>
        e instanceof UsageError && e.message === `invalid --cpus ${Number(value)}: the Docker engine has ${ncpu} CPU${ncpu === 1 ? '' : 's'}, so at most --cpus ${ncpu}`));
  }
  it('refuses less than a hundredth of a CPU (Docker would)', () => assert.throws(() => parseCpus('0.001'), /at least 0.01/));
});

describe('empty egress entries', () => {
  for (const list of ['allowOut', 'denyOut'] as const) {
    for (const empty of ['', '  ']) {
      it(`${list} ${JSON.stringify(empty)} is refused`, () =>
        assert.throws(() => normalizePolicy({ [list]: ['a.test', empty] }), (e: Error) => e instanceof UsageError && e.message.startsWith(`invalid ${list} entry "${empty}": it is empty`)));
    }
  }
  for (const list of ['allowPorts', 'denyPorts'] as const) {
    it(`${list} "" is refused`, () =>
      assert.throws(() => normalizePolicy({ [list]: ['443', ''] }), (e: Error) => e instanceof UsageError && e.message.startsWith(`invalid ${list} entry "": it is empty`)));
  }
});
