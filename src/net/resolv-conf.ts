// The sandbox's /etc/resolv.conf (mounted read-only): its only resolver is sbx's DNS forwarder,
// reached at the host's address on the sandbox's own bridge.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function resolvConfPath(home: string, id: string): string {
  return join(home, 'sandboxes', id, 'resolv.conf');
}

export function writeResolvConf(home: string, id: string, nameserver: string): string {
  const path = resolvConfPath(home, id);
  mkdirSync(join(home, 'sandboxes', id), { recursive: true });
  writeFileSync(path, `# sbx: names resolve through sbx's DNS forwarder, which applies the egress policy\nnameserver ${nameserver}\noptions timeout:2 attempts:2\n`, { mode: 0o644 });
  return path;
}

export function removeSandboxFiles(home: string, id: string): void {
  rmSync(join(home, 'sandboxes', id), { recursive: true, force: true });
}
