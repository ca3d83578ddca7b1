// Address ranges as numbers: CIDRs merged into sorted, disjoint [start, end] spans, and a binary
// search over them. Shared by policy decisions (thousands of entries, one lookup each) and by the
// kernel rules (nft interval sets refuse overlapping elements).
import ipaddr from 'ipaddr.js';

export type Family = 4 | 6;
export type Span = [bigint, bigint];

export function addressToBigInt(addr: ipaddr.IPv4 | ipaddr.IPv6): bigint {
  return addr.toByteArray().reduce((acc, byte) => (acc << 8n) | BigInt(byte), 0n);
}

export function bigIntToAddress(value: bigint, family: Family): string {
  const bytes: number[] = [];
  for (let i = 0; i < (family === 4 ? 4 : 16); i++) {
    bytes.unshift(Number(value & 0xffn));
    value >>= 8n;
  }
  return ipaddr.fromByteArray(bytes).toString();
}

/** CIDRs of one family (others are skipped) as merged spans. */
export function mergeCidrs(cidrs: readonly string[], family: Family): Span[] {
  const width = family === 4 ? 32n : 128n;
  const spans: Span[] = [];
  for (const cidr of cidrs) {
    const [addr, bits] = ipaddr.parseCIDR(cidr);
    if ((addr.kind() === 'ipv4' ? 4 : 6) !== family) continue;
    const size = 1n << (width - BigInt(bits));
    const start = (addressToBigInt(addr) / size) * size;
    spans.push([start, start + size - 1n]);
  }
  return mergeSpans(spans);
}

/** Sorted, disjoint spans covering the same addresses (overlapping and adjacent ones joined). */
export function mergeSpans(input: readonly Span[]): Span[] {
  const spans = input.map(([start, end]): Span => [start, end]);
  spans.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const merged: Span[] = [];
  for (const [start, end] of spans) {
    const last = merged[merged.length - 1];
    if (last && start <= last[1] + 1n) {
      if (end > last[1]) last[1] = end;
    } else merged.push([start, end]);
  }
  return merged;
}

/** Whether a merged span list contains the value (binary search). */
export function spansContain(spans: readonly Span[], value: bigint): boolean {
  let lo = 0;
  let hi = spans.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const [start, end] = spans[mid]!;
    if (value < start) hi = mid - 1;
    else if (value > end) lo = mid + 1;
    else return true;
  }
  return false;
}
