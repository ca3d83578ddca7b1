// The host-mode check that an engine's bridge is in this network namespace (src/net/engine-here.ts):
// against this machine's own routes, so the cases hold on any host.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { RuntimeError } from '../../src/core/errors.ts';
import { assertBridgeHere, bridgeHere, engineElsewhere } from '../../src/net/engine-here.ts';

/** A connected route of this host, as an interface and its subnet ("10.0.0.0/24"). */
function someRoute(): { iface: string; subnet: string } {
  for (const line of readFileSync('/proc/net/route', 'utf8').split('\n').slice(1)) {
    const [iface, dest, gateway, , , , , mask] = line.split('\t');
    if (!iface || gateway !== '00000000' || !mask || mask === '00000000') continue;
    const octets = (hex: string) => hex.match(/../g)!.reverse().map((h) => parseInt(h, 16));
    const bits = octets(mask).reduce((n, o) => n + o.toString(2).replace(/0/g, '').length, 0);
    return { iface, subnet: `${octets(dest!).join('.')}/${bits}` };
  }
  throw new Error('this host has no connected IPv4 route');
}

describe('bridgeHere', () => {
  const { iface, subnet } = someRoute();
  const [addr, bits] = subnet.split('/') as [string, string];
  const other = addr.replace(/^\d+/, (o) => String((Number(o) + 1) % 224));
  const cases: Array<[string, string, string, boolean]> = [
    ['an interface here with its subnet', iface, subnet, true],
    ['an interface here with another subnet (another engine picked another one)', iface, `${other}/${bits}`, false],
    ['an interface here with another prefix length', iface, `${addr}/${Number(bits) === 32 ? 31 : Number(bits) + 1}`, false],
    ['an interface that is not here (the engine is elsewhere)', 'sbx-zzzzzzzzzz', subnet, false],
    ['a subnet that is not IPv4', iface, 'fd00::/64', false],
    ['a subnet without a length', iface, addr, false],
  ];
  for (const [what, name, net, expected] of cases) it(`${what}: ${expected}`, () => assert.equal(bridgeHere(name, net), expected));

  it('refuses a sandbox whose bridge is not here, naming the engine and the sandbox', () => {
    assert.throws(() => assertBridgeHere('zzzzzzzzzz', 'web', { subnet }), (err: Error) => {
      assert.ok(err instanceof RuntimeError);
      assert.match(err.message, /^the Docker engine at \S+ runs in another network namespace or on another machine: sbx's egress rules would not reach its sandboxes, so sandbox web was not started \(use the sbx agent for remote engines\)$/);
      return true;
    });
  });

  it('is cheap (it is on every create and start): about one read of the kernel\'s routes', () => {
    // Against a baseline of the same run (reading /proc/net/route), not a fixed time: with a
    // thousand bridges on the machine the file has a thousand lines, and both grow with it.
    const n = 200;
    const per = (fn: () => unknown) => {
      const began = process.hrtime.bigint();
      for (let i = 0; i < n; i++) fn();
      return Number(process.hrtime.bigint() - began) / n / 1000;
    };
    const read = per(() => readFileSync('/proc/net/route', 'utf8'));
    const check = per(() => bridgeHere(iface, subnet));
    assert.ok(check < 3 * read + 200, `${check.toFixed(0)} µs per check, ${read.toFixed(0)} µs per read of /proc/net/route`);
  });

  it('one line, exit code 1', () => {
    const err = engineElsewhere('the gateway of /x');
    assert.equal(err.exitCode, 1);
    assert.doesNotMatch(err.message, /\n/);
  });
});
