// Containers that cannot take the host down: the pids limit, the capability set and
// no-new-privileges, proven from inside sandboxes, and a fork bomb that the host shrugs off.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { curl, docker, eventually, run, SBX, World } from '../helpers.ts';

const world = new World();
after(() => world.cleanup());

const sh = (sandbox: string, script: string) => world.sbx(['exec', sandbox, '--', 'sh', '-c', script]);

/** Capability numbers (linux/capability.h) of the ones these tests name. */
const CAP = {
  CHOWN: 0, DAC_OVERRIDE: 1, DAC_READ_SEARCH: 2, FOWNER: 3, FSETID: 4, KILL: 5, SETGID: 6, SETUID: 7, SETPCAP: 8,
  NET_BIND_SERVICE: 10, NET_ADMIN: 12, NET_RAW: 13, SYS_CHROOT: 18, SYS_PTRACE: 19, SYS_ADMIN: 21, MKNOD: 27,
  AUDIT_WRITE: 29, SETFCAP: 31,
} as const;
const KEPT = ['CHOWN', 'DAC_OVERRIDE', 'FOWNER', 'FSETID', 'KILL', 'SETGID', 'SETUID', 'NET_BIND_SERVICE'] as const;
const mask = (caps: readonly (keyof typeof CAP)[]) => caps.reduce((m, c) => m | (1n << BigInt(CAP[c])), 0n);

/** The pids cgroup directory of a container on the host (cgroup v1 or v2). */
async function pidsCgroup(container: string): Promise<string> {
  const pid = (await docker('inspect', '-f', '{{.State.Pid}}', container)).stdout.trim();
  const lines = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n');
  const v1 = lines.find((l) => /^\d+:pids:/.test(l));
  return v1 ? join('/sys/fs/cgroup/pids', v1.split(':')[2]!) : join('/sys/fs/cgroup', lines.find((l) => l.startsWith('0::'))!.slice(3));
}
const cgroupValue = (dir: string, file: string) => readFileSync(join(dir, file), 'utf8').trim();
/** How many forks the pids limit has refused so far. */
const refusedForks = (dir: string) => Number(/max (\d+)/.exec(cgroupValue(dir, 'pids.events'))![1]);

describe('the pids limit', () => {
  it('is 1024 by default: in the container, in inspect --json and in the details on a TTY', async () => {
    const box = await world.json(['create', '--name', 'plain']);
    assert.equal(box.pidsLimit, 1024);
    const [c] = JSON.parse((await docker('inspect', box.container)).stdout);
    assert.equal(c.HostConfig.PidsLimit, 1024);
    assert.equal(cgroupValue(await pidsCgroup(box.container), 'pids.max'), '1024');
    const tty = await run('script', ['-qec', `'${SBX}' inspect plain`, '/dev/null'], { env: { ...world.env, SBX_HOME: world.home, NO_COLOR: '1' } });
    assert.match(tty.stdout, /pids-limit\s+1024/);
    assert.match((await world.sbx(['inspect', 'plain'])).stdout, /^pids-limit\t1024$/m);
    await world.sbx(['rm', '-f', 'plain']);
  });

  it('create --pids-limit N sets it, and start brings a missing container back with it', async () => {
    const box = await world.json(['create', '--name', 'few', '--pids-limit', '64']);
    assert.equal(box.pidsLimit, 64);
    // Enforced: of 100 processes, fewer than 64 start, and the next fork fails with EAGAIN.
    const spawn100 = 'import subprocess\nps = []\ntry:\n  for _ in range(100): ps.append(subprocess.Popen(["sleep", "30"]))\nexcept OSError as e: print(len(ps), e.errno)\nfor p in ps: p.kill()';
    const r = await world.sbx(['exec', 'few', '--', 'python3', '-c', spawn100]);
    const [started, errno] = r.stdout.trim().split(' ').map(Number);
    assert.ok(started! > 0 && started! < 64 && errno === 11, `${r.stdout} ${r.stderr}`);
    await docker('rm', '-f', box.container);
    const again = await world.json(['start', 'few']);
    assert.deepEqual([again.id, again.status, again.pidsLimit], [box.id, 'running', 64]);
    const [c] = JSON.parse((await docker('inspect', box.container)).stdout);
    assert.equal(c.HostConfig.PidsLimit, 64);
    await world.sbx(['rm', '-f', 'few']);
  });

  for (const bad of ['x', '0', '-1', '15', '1.5', '1e3', '4194305']) {
    it(`rejects --pids-limit ${bad} with exit 2 and one line naming the flag`, async () => {
      const r = await world.sbx(['create', '--name', 'never', `--pids-limit=${bad}`]);
      assert.equal(r.code, 2);
      assert.equal(r.stderr, `error: invalid --pids-limit "${bad}": accepted: a whole number of processes from 16 to 4194304 (default 1024)\n`);
      assert.equal((await world.sbx(['inspect', 'never'])).code, 3, 'nothing was created');
    });
  }
});

describe('capabilities', () => {
  // No egress at all: apt-get update must fail on the network, and no query leaves the host.
  before(async () => {
    await world.json(['create', '--name', 'caps', '--block-network']);
  });

  it('keeps only the userland set (bounding set included) with no-new-privileges', async () => {
    const box = await world.json(['inspect', 'caps']);
    const [c] = JSON.parse((await docker('inspect', box.container)).stdout);
    assert.deepEqual(c.HostConfig.CapDrop, ['ALL']);
    assert.deepEqual([...c.HostConfig.CapAdd].sort(), [...KEPT].sort());
    assert.deepEqual(c.HostConfig.SecurityOpt, ['no-new-privileges']);
    const r = await sh('caps', 'grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status');
    assert.equal(r.code, 0, r.stderr);
    const capEff = BigInt('0x' + /CapEff:\s*([0-9a-f]+)/.exec(r.stdout)![1]);
    const capBnd = BigInt('0x' + /CapBnd:\s*([0-9a-f]+)/.exec(r.stdout)![1]);
    assert.equal(capEff, mask(KEPT));
    assert.equal(capBnd, mask(KEPT), 'nothing else can ever be gained');
    for (const cap of ['NET_ADMIN', 'NET_RAW', 'SYS_ADMIN', 'SYS_PTRACE', 'MKNOD', 'AUDIT_WRITE', 'SYS_CHROOT', 'SETFCAP', 'SETPCAP', 'DAC_READ_SEARCH'] as const) {
      assert.equal(capEff & (1n << BigInt(CAP[cap])), 0n, cap);
    }
    assert.match(r.stdout, /NoNewPrivs:\s*1/);
  });

  // What a Debian userland does as root; each needs one of the capabilities kept.
  const works: Array<[string, string, RegExp]> = [
    ['chown a file to another user (CHOWN)', 'touch /tmp/x && chown nobody:nogroup /tmp/x && stat -c %U:%G /tmp/x', /^nobody:nogroup$/],
    ['su to another user (SETUID, SETGID)', 'su nobody -s /bin/sh -c "id -u"', /^65534$/],
    ['runuser and setpriv', 'runuser -u nobody -- id -u && setpriv --reuid=65534 --regid=65534 --clear-groups id -g', /^65534\n65534$/],
    ['useradd -m, then su to the new user', 'useradd -m alice && su alice -c "touch ~/f && stat -c %U ~/f"', /^alice$/],
    ['adduser', 'adduser --disabled-password --gecos "" bob >/dev/null && id -un bob', /^bob$/],
    ["read, write and chmod another user's private file (DAC_OVERRIDE, FOWNER)", 'runuser -u nobody -- sh -c "echo s > /tmp/p && chmod 600 /tmp/p" && cat /tmp/p && echo t >> /tmp/p && chmod 644 /tmp/p && stat -c %a /tmp/p', /^s\n644$/],
    ['make a setgid directory of another group (FSETID)', 'mkdir /tmp/sg && chown nobody:nogroup /tmp/sg && chmod 2775 /tmp/sg && stat -c %A /tmp/sg', /^drwxrwsr-x$/],
    [
      "kill another user's process (KILL)",
      'runuser -u nobody -- sleep 60 & for i in $(seq 50); do pgrep -u nobody -x sleep >/dev/null && break; sleep 0.1; done; kill $(pgrep -u nobody -x sleep) && echo killed',
      /^killed$/,
    ],
    ['listen on port 80 (NET_BIND_SERVICE)', 'python3 -c \'import socket; s = socket.socket(); s.bind(("0.0.0.0", 80)); s.listen(); print("listening")\'', /^listening$/],
  ];
  for (const [what, script, out] of works) {
    it(`root can ${what}`, async () => {
      const r = await sh('caps', script);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout.trim(), out);
    });
  }

  it('apt-get installs a package: downloads as _apt, dpkg unpacks, the postinst adds a system user', async () => {
    // The repository is served inside the sandbox on loopback (the fixture builds it).
    await world.put('caps', 'apt_local_install.sh', '/tmp/apt_local_install.sh');
    const r = await sh('caps', 'sh /tmp/apt_local_install.sh 2>&1');
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, /Setting up sbx-probe \(1\.0\)/);
    assert.match(r.stdout.trim(), /sbx-probe:sbx-probe drwxr-s---$/);
    assert.doesNotMatch(r.stdout, /setgroups|seteuid|setegid|unsandboxed|Operation not permitted/);
  });

  it('apt-get update offline fails on the network only, never on a privilege', async () => {
    const r = await sh('caps', 'apt-get update 2>&1');
    assert.match(r.stdout, /Temporary failure resolving|Could not resolve|Could not connect/);
    assert.doesNotMatch(r.stdout, /setgroups|seteuid|setegid|unsandboxed|Operation not permitted|Permission denied/);
  });

  const refused: Array<[string, string, RegExp]> = [
    ['open a raw socket (NET_RAW)', 'python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)"', /PermissionError: \[Errno 1\] Operation not permitted/],
    ['make a device node (MKNOD)', 'mknod /tmp/null c 1 3', /Operation not permitted/],
    ['add a network link (NET_ADMIN)', 'ip link add dummy0 type dummy', /Operation not permitted/],
    ['mount a file system (SYS_ADMIN)', 'mount -t tmpfs none /mnt', /permission denied|Operation not permitted/i],
    ['chroot (SYS_CHROOT)', 'chroot / true', /Operation not permitted/],
  ];
  for (const [what, script, err] of refused) {
    it(`root cannot ${what}`, async () => {
      const r = await sh('caps', script);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, err);
    });
  }
});

describe('a fork bomb', () => {
  let bomb: { container: string } | undefined;
  // However the test ends, the bomb ends: it runs under timeout inside, and is removed here.
  after(async () => {
    if (bomb) await docker('rm', '-f', bomb.container);
  });

  it('stops at the pids limit while sbx, the gateway and other sandboxes carry on; rm --force ends it', { timeout: 180_000 }, async (t) => {
    await world.json(['create', '--name', 'neighbour', '-p', '8000', '--', 'python3', '-m', 'http.server', '8000']);
    const url = world.url(8000, 'neighbour');
    await eventually(async () => (await curl([url])).status === 200, 'the neighbour serving');
    const box = (bomb = await world.json(['create', '--name', 'bomb']));
    const cgroup = await pidsCgroup(box.container);
    const started = Date.now();
    const fire = await world.sbx(['exec', '--detach', 'bomb', '--', 'timeout', '-k', '1', '20', 'sh', '-c', 'bomb() { bomb | bomb & }; bomb']);
    assert.equal(fire.code, 0, fire.stderr);
    await eventually(async () => refusedForks(cgroup) > 0, 'the bomb to reach the pids limit', 15_000);
    t.diagnostic(`the bomb reached the limit in ${Date.now() - started} ms`);

    const timed = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
      const t0 = Date.now();
      const result = await f();
      t.diagnostic(`${what}: ${Date.now() - t0} ms`);
      return result;
    };
    const refusedBefore = refusedForks(cgroup);
    const ls = await timed('sbx ls', () => world.sbx(['ls', '--json'], { timeoutMs: 30_000 }));
    assert.equal(ls.code, 0, ls.stderr);
    const names = JSON.parse(ls.stdout).map((s: { name: string }) => s.name);
    assert.ok(names.includes('bomb') && names.includes('neighbour'), names.join(' '));
    const status = await timed('sbx gateway status', () => world.sbx(['gateway', 'status', '--json'], { timeoutMs: 30_000 }));
    assert.equal(status.code, 0, status.stderr);
    assert.equal(JSON.parse(status.stdout).running, true);
    const page = await timed('a URL of the neighbour', () => curl([url]));
    assert.equal(page.status, 200);
    const echo = await timed('sbx exec neighbour', () => world.sbx(['exec', 'neighbour', '--', 'echo', 'ok'], { timeoutMs: 30_000 }));
    assert.deepEqual([echo.code, echo.stdout], [0, 'ok\n'], echo.stderr);
    // All of that happened while the bomb was at the limit.
    assert.ok(refusedForks(cgroup) > refusedBefore, 'the bomb was still forking');
    assert.ok(Number(cgroupValue(cgroup, 'pids.current')) <= 1024);

    const rm = await timed('sbx rm --force bomb', () => world.sbx(['rm', '--force', 'bomb'], { timeoutMs: 60_000 }));
    assert.equal(rm.code, 0, rm.stderr);
    assert.equal((await docker('inspect', box.container)).code, 1, 'the container is gone');
    assert.ok(Date.now() - started < 20_000, 'removed while the bomb still ran (before its timeout)');
    t.diagnostic(`from the bomb's start to its removal: ${Date.now() - started} ms`);
    bomb = undefined;
    await world.sbx(['rm', '--force', 'neighbour']);
  });
});
