// The egress worker process (dist/egress-worker.cjs): sbx's DNS forwarder and Host/SNI proxy, away
// from the root gateway that starts it (egress-supervisor.ts). Its one argument is its
// configuration (JSON); it talks to the gateway over the IPC channel only.
//
// It is started as the gateway's user (root), binds its listeners on ports below 1024 (no
// unprivileged user can take them while the gateway is down: see low-ports.ts), and drops to the
// unprivileged user before it reads a byte of a sandbox's traffic (nothing is redirected to the new
// ports before it reports them). The gateway's code and Node may live where only root can read them
// (a checkout in /root), and a process that changed its user this way is not dumpable (no other
// process of that user can trace it or read its memory). If the drop does not hold, it says why and
// exits.
import type { WorkerConfig } from './egress-ipc.ts';
import { runEgressWorker } from './egress-worker.ts';

const log = (line: string) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);

function fail(message: string): never {
  process.send?.({ kind: 'failed', message });
  log(`egress worker: ${message}`);
  process.exit(1);
}

function dropPrivileges(to: NonNullable<WorkerConfig['drop']>): void {
  try {
    process.setgroups!([]);
    process.setgid!(to.gid);
    process.setuid!(to.uid);
  } catch (err) {
    fail(`could not become ${to.name} (uid ${to.uid}, gid ${to.gid}): ${(err as Error).message}`);
  }
  const regained = (() => {
    try {
      process.setuid!(0);
      return true;
    } catch {
      return false;
    }
  })();
  if (regained || process.getuid!() !== to.uid || process.geteuid!() !== to.uid || process.getgid!() !== to.gid || process.getegid!() !== to.gid || process.getgroups!().some((g) => g !== to.gid)) {
    fail(`the switch to ${to.name} did not hold`);
  }
}

async function main(): Promise<void> {
  if (!process.send) {
    process.stderr.write('the egress worker is started by the sbx gateway (it needs its IPC channel)\n');
    process.exit(2);
  }
  // The gateway went away (or closed the channel): so do we.
  process.on('disconnect', () => process.exit(0));
  let config: WorkerConfig;
  try {
    config = JSON.parse(process.argv[2] ?? '') as WorkerConfig;
  } catch {
    return fail('no configuration');
  }
  process.chdir('/');
  let side;
  try {
    side = await runEgressWorker(process, config, log);
  } catch (err) {
    return fail(`could not listen: ${(err as Error).message}`);
  }
  if (config.drop) dropPrivileges(config.drop);
  process.on('SIGTERM', () => {
    side.close();
    process.exit(0);
  });
  process.send({ kind: 'ready', listeners: side.listeners, uid: process.getuid!(), gid: process.getgid!() });
}

void main();
