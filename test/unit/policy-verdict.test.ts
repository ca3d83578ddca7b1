// The decision with its rule (decideConnection, decideName): the verdict is connectionAllowed's
// and nameResolvable's, and the rule names the entry, mode or default that decided. Examples from
// the README's rule table.
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { compilePolicy, connectionAllowed, decideConnection, decideName, nameResolvable, normalizePolicy, type Connection, type NetworkPolicyInput } from '../../src/core/network-policy.ts';

const policy = (input: NetworkPolicyInput) => compilePolicy(normalizePolicy(input));
const check = (input: NetworkPolicyInput, c: Connection, allowed: boolean, rule: string) => {
  const p = policy(input);
  assert.deepEqual(decideConnection(p, c), { allowed, rule }, JSON.stringify({ input, c }));
  assert.equal(connectionAllowed(p, c), allowed, 'the same verdict as the enforcement');
};

it('addresses and CIDRs: the entry that decided, allow before deny', () => {
  const e2b = { denyOut: ['all'], allowOut: ['1.1.1.1', '8.8.8.0/24'] };
  check(e2b, { address: '1.1.1.1', port: 53 }, true, 'allowOut 1.1.1.1');
  check(e2b, { address: '8.8.8.9', port: 443 }, true, 'allowOut 8.8.8.0/24');
  check(e2b, { address: '9.9.9.9', port: 443 }, false, 'mode block-all');
  check({ denyOut: ['8.8.8.8'] }, { address: '8.8.8.8', port: 53 }, false, 'denyOut 8.8.8.8');
  check({ denyOut: ['8.8.8.8'] }, { address: '8.8.4.4', port: 53 }, true, 'mode allow-all');
  const lan = { denyOut: ['10.0.0.0/8'], allowOut: ['10.1.2.3'] };
  check(lan, { address: '10.1.2.3', port: 80 }, true, 'allowOut 10.1.2.3');
  // 10/8 is protected: refused by default; a deny entry that covers it is named, as its user wrote it.
  check(lan, { address: '10.9.9.9', port: 80 }, false, 'denyOut 10.0.0.0/8');
  check({}, { address: '10.9.9.9', port: 80 }, false, 'default: protected address');
  check({ denyOut: ['172.17.0.1'] }, { address: '172.17.0.1', port: 80, toHost: true }, false, 'denyOut 172.17.0.1');
  check({ allowOut: ['10.0.0.0/8'] }, { address: '10.200.0.1', port: 80 }, true, 'allowOut 10.0.0.0/8');
  check({ denyOut: ['2001:db8::/32'] }, { address: '2001:db8::1', port: 443 }, false, 'denyOut 2001:db8::/32');
  check({ denyOut: ['2001:db8::/32'] }, { address: '2001:db9::1', port: 443 }, true, 'mode allow-all');
});

it('ports: allowPorts and denyPorts entries, ranges included', () => {
  check({ mode: 'block-all', allowPorts: ['443'] }, { address: '93.184.216.34', port: 443 }, true, 'allowPorts 443');
  check({ mode: 'block-all', allowPorts: ['443'] }, { address: '93.184.216.34', port: 80 }, false, 'mode block-all');
  check({ denyPorts: ['25', '6660-6669'] }, { address: '93.184.216.34', port: 6665 }, false, 'denyPorts 6660-6669');
  check({ denyPorts: ['25', '6660-6669'] }, { address: '93.184.216.34', port: 25 }, false, 'denyPorts 25');
});

it('names: plain names on 80/443, name:port entries on their ports, wildcards', () => {
  const gh = { mode: 'block-all' as const, allowOut: ['github.com', 'github.com:22'] };
  check(gh, { name: 'github.com', port: 443 }, true, 'allowOut github.com');
  check(gh, { name: 'GitHub.com.', port: 22 }, true, 'allowOut github.com:22');
  check(gh, { name: 'github.com', port: 8080 }, false, 'mode block-all');
  check(gh, { name: 'gitlab.com', port: 443 }, false, 'mode block-all');
  const wild = { mode: 'block-all' as const, allowOut: ['*.example.com:8000-8100'] };
  check(wild, { name: 'a.example.com', port: 8050 }, true, 'allowOut *.example.com:8000-8100');
  check(wild, { name: 'a.example.com', port: 443 }, false, 'mode block-all');
  check(wild, { name: 'example.com', port: 8050 }, false, 'mode block-all');
  check({ denyOut: ['*.example.com'] }, { name: 'x.y.example.com', port: 443 }, false, 'denyOut *.example.com');
  check({ denyOut: ['example.com'] }, { name: 'example.com', port: 80 }, false, 'denyOut example.com');
  check({ allowOut: ['all'] }, { name: 'anything.test', port: 1 }, true, 'allowOut all');
});

it("the host's own addresses: host entries, else refused by default", () => {
  check({}, { address: '172.17.0.1', port: 5432, toHost: true }, false, 'default: host address');
  check({ allowOut: ['host:5432'] }, { address: '172.17.0.1', port: 5432, toHost: true }, true, 'allowOut host:5432');
  check({ allowOut: ['host:5432'] }, { address: '172.17.0.1', port: 22, toHost: true }, false, 'default: host address');
  check({ allowOut: ['host'] }, { address: '172.17.0.1', port: 22, toHost: true }, true, 'allowOut host');
  // allow-all and a broad allow do not open the host or the protected ranges.
  check({ allowOut: ['all'] }, { address: '127.0.0.1', port: 80 }, false, 'default: protected address');
  check({ allowOut: ['example.com'] }, { name: 'example.com', address: '169.254.169.254', port: 80 }, false, 'default: protected address');
});

it('DNS: answered or NXDOMAIN, and why', () => {
  const cases: Array<[NetworkPolicyInput, string, boolean, string]> = [
    [{}, 'example.com', true, 'mode allow-all'],
    [{ denyOut: ['example.com'] }, 'EXAMPLE.com.', false, 'denyOut example.com'],
    [{ denyOut: ['*.example.com'] }, 'a.example.com', false, 'denyOut *.example.com'],
    [{ mode: 'block-all' }, 'example.com', false, 'mode block-all'],
    [{ mode: 'block-all', allowOut: ['github.com:22'] }, 'github.com', true, 'allowOut github.com:22'],
    [{ mode: 'block-all', allowOut: ['*.github.com'] }, 'api.github.com', true, 'allowOut *.github.com'],
    [{ mode: 'block-all', allowOut: ['all'] }, 'x.test', true, 'allowOut all'],
  ];
  for (const [input, name, allowed, rule] of cases) {
    const p = policy(input);
    assert.deepEqual(decideName(p, name), { allowed, rule }, JSON.stringify({ input, name }));
    assert.equal(nameResolvable(p, name), allowed);
  }
});
