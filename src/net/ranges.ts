// CIDRs to merged address intervals, so that nft interval sets never see overlaps (which it
// refuses) however the user's list overlaps: thousands of entries become few elements.
import ipaddr from 'ipaddr.js';

export type Family = 4 | 6;

function toBigInt(addr: ipaddr.IPv4 | ipaddr.IPv6): bigint {
  return addr.toByteArray().reduce((acc, byte) => (acc << 8n) | BigInt(byte), 0n);
}

function fromBigInt(value: bigint, family: Family): string {
  const bytes: number[] = [];
  for (let i = 0; i < (family === 4 ? 4 : 16); i++) {
    bytes.unshift(Number(value & 0xffn));
    value >>= 8n;
  }
  return ipaddr.fromByteArray(bytes).toString();
}

/** Merges CIDRs of one family into sorted, disjoint intervals written as nft set elements. */
export function mergedIntervals(cidrs: readonly string[], family: Family): string[] {
  const width = family === 4 ? 32n : 128n;
  const spans: Array<[bigint, bigint]> = [];
  for (const cidr of cidrs) {
    const [addr, bits] = ipaddr.parseCIDR(cidr);
    if ((addr.kind() === 'ipv4' ? 4 : 6) !== family) continue;
    const size = 1n << (width - BigInt(bits));
    const start = (toBigInt(addr) / size) * size;
    spans.push([start, start + size - 1n]);
  }
  spans.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const merged: Array<[bigint, bigint]> = [];
  for (const [start, end] of spans) {
    const last = merged[merged.length - 1];
    if (last && start <= last[1] + 1n) {
      if (end > last[1]) last[1] = end;
    } else merged.push([start, end]);
  }
  return merged.map(([start, end]) => (start === end ? fromBigInt(start, family) : `${fromBigInt(start, family)}-${fromBigInt(end, family)}`));
}

/** Port ranges merged the same way ("80", "8000-8100"). */
export function mergedPorts(ranges: ReadonlyArray<{ from: number; to: number }>): string[] {
  const sorted = [...ranges].sort((a, b) => a.from - b.from);
  const merged: Array<{ from: number; to: number }> = [];
  for (const r of sorted) {
    const last = merged[merged.length - 1];
    if (last && r.from <= last.to + 1) last.to = Math.max(last.to, r.to);
    else merged.push({ ...r });
  }
  return merged.map((r) => (r.from === r.to ? String(r.from) : `${r.from}-${r.to}`));
}
