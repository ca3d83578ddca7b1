// The IPv4 networks this host routes to (its links, VPNs, other bridges), from /proc/net/route:
// an address plan must not hand a sandbox a subnet the host already reaches another way. The
// default route is left out (it covers everything). In agent mode this is the engine host's
// table: the agent shares its network namespace.
import { readFileSync } from 'node:fs';

/** /proc/net/route's little-endian hex address as dotted quad. */
function hexToAddress(hex: string): string {
  const n = Number.parseInt(hex, 16);
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff].join('.');
}

/** Prefix length of a contiguous netmask given in /proc/net/route's hex. */
function maskBits(hex: string): number {
  let n = Number.parseInt(hex, 16) >>> 0;
  let bits = 0;
  while (n) {
    bits += n & 1;
    n >>>= 1;
  }
  return bits;
}

/** The routes' destinations as CIDRs (the text of /proc/net/route may be given, for tests). */
export function hostIPv4Routes(table?: string): string[] {
  let text = table;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/net/route', 'utf8');
    } catch {
      return [];
    }
  }
  const out = new Set<string>();
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 8) continue;
    const bits = maskBits(f[7]!);
    if (bits === 0) continue; // the default route
    out.add(`${hexToAddress(f[1]!)}/${bits}`);
  }
  return [...out];
}
