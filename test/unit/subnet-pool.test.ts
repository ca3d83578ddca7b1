import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { WORKER_SHUTDOWN_S } from '../../src/gateway/nginx-config.ts';
import { DEFAULT_SUBNET_POOL, freeSubnets, poolSubnet, stillResting, SUBNET_REST_MS, subnetPool } from '../../src/core/subnet-pool.ts';
import { UsageError } from '../../src/core/errors.ts';
import { hostIPv4Routes } from '../../src/net/host-routes.ts';

describe("sbx's address pool", () => {
  it('defaults to 10.211.0.0/16: 4,096 /28 subnets, the first host the gateway', () => {
    const pool = subnetPool(undefined);
    assert.equal(pool.cidr, DEFAULT_SUBNET_POOL);
    assert.equal(pool.count, 4096);
    assert.deepEqual(poolSubnet(pool, 0), { subnet: '10.211.0.0/28', gateway: '10.211.0.1' });
    assert.deepEqual(poolSubnet(pool, 4095), { subnet: '10.211.255.240/28', gateway: '10.211.255.241' });
  });

  for (const bad of ['10.0.0.0', '10.0.0.0/29', '10.0.0.0/7', '10.0.0.1/24', 'fd00::/64', '300.0.0.0/16', 'a.b.c.d/16', '10.0.0.0/16 x']) {
    it(`refuses SBX_SUBNET_POOL=${bad} with a usage error naming the accepted form`, () => {
      assert.throws(() => subnetPool(bad), (err: Error) => err instanceof UsageError && /^SBX_SUBNET_POOL=.*: .*; expected an IPv4 CIDR from \/8 to \/28, such as 10\.211\.0\.0\/16$/.test(err.message));
    });
  }

  it('takes a /28 pool (one subnet) and a /8', () => {
    assert.equal(subnetPool('192.0.2.0/28').count, 1);
    assert.equal(subnetPool('10.0.0.0/8').count, 2 ** 20);
  });

  it('skips subnets that overlap a Docker network or a route, whatever their size', () => {
    const pool = subnetPool('10.9.0.0/24'); // 16 subnets
    const taken = ['10.9.0.0/28', '10.9.0.16/28', '10.9.0.32/27', '10.9.0.100/32', 'fd5b::/64', '172.17.0.0/16'];
    const free = [...freeSubnets(pool, taken)].map((s) => s.subnet);
    assert.equal(free[0], '10.9.0.64/28');
    assert.ok(!free.includes('10.9.0.96/28'), 'the /32 in it takes it');
    assert.equal(free.length, 16 - 5);
  });

  it('starts where it is told and wraps round; a pool covered by a wider route has nothing free', () => {
    const pool = subnetPool('10.9.0.0/26'); // 4 subnets
    assert.deepEqual([...freeSubnets(pool, [], 3)].map((s) => s.subnet), ['10.9.0.48/28', '10.9.0.0/28', '10.9.0.16/28', '10.9.0.32/28']);
    assert.deepEqual([...freeSubnets(pool, ['10.0.0.0/8'])], []);
  });
});

describe("the host's routes", () => {
  it('are read from /proc/net/route without the default route', () => {
    const table = [
      'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
      'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0',
      'docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0',
      'eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0',
      'tun0\t0100000A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0',
    ].join('\n');
    assert.deepEqual(hostIPv4Routes(table), ['172.17.0.0/16', '192.0.2.0/24', '10.0.0.1/32']);
  });

  it("are this machine's when no table is given", () => {
    assert.ok(Array.isArray(hostIPv4Routes()));
  });
});

describe('resting subnets', () => {
  it('keeps those whose rest is not over, drops the rest (and copes with none)', () => {
    assert.deepEqual(stillResting({ '10.9.0.0/28': 2000, '10.9.0.16/28': 1000 }, 1000), { '10.9.0.0/28': 2000 });
    assert.deepEqual(stillResting(undefined, 1000), {});
    assert.deepEqual(stillResting({ '10.9.0.0/28': 10 ** 13 }, 1000), { '10.9.0.0/28': 1000 + SUBNET_REST_MS }, 'a clock that went back rests no longer');
    assert.ok(SUBNET_REST_MS > WORKER_SHUTDOWN_S * 1000 + 2000, "longer than nginx's worker_shutdown_timeout, with time for the reload");
  });
});
