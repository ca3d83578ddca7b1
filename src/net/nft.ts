// Runs nftables scripts: the only place that touches the kernel's firewall. Each call is one
// `nft -f -` transaction, so it is all-or-nothing.
import { spawn } from 'node:child_process';
import { RuntimeError } from '../core/errors.ts';

export function requireRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new RuntimeError('egress rules need root on the Docker host (nftables): run sbx as root');
  }
}

/** Applies a script atomically; throws a RuntimeError with nft's own words when it refuses. */
export function runNft(script: string, what: string): Promise<void> {
  requireRoot();
  return new Promise((resolve, reject) => {
    const child = spawn(process.env.SBX_NFT ?? 'nft', ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(new RuntimeError(err.code === 'ENOENT' ? `${what}: nft is not installed (apt-get install nftables, or ./scripts/setup)` : `${what}: ${err.message}`)),
    );
    child.on('close', (code) => {
      if (code === 0) return resolve();
      const first = stderr.split('\n').find((l) => l.startsWith('Error')) ?? stderr.trim().split('\n')[0] ?? `nft exited ${code}`;
      reject(new RuntimeError(`${what}: ${first}`));
    });
    child.stdin.on('error', () => {});
    child.stdin.end(script);
  });
}
