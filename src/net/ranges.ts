// CIDRs and port ranges as nft set elements: merged (nft interval sets refuse overlaps), so
// thousands of entries become few elements.
import { bigIntToAddress, mergeCidrs, type Family, type Span } from '../core/address-ranges.ts';

export type { Family };

/** Merged spans written as nft set elements ("10.0.0.0-10.0.0.255", or one address). */
export function spanElements(spans: readonly Span[], family: Family): string[] {
  return spans.map(([start, end]) => (start === end ? bigIntToAddress(start, family) : `${bigIntToAddress(start, family)}-${bigIntToAddress(end, family)}`));
}

/** Merges CIDRs of one family into sorted, disjoint intervals written as nft set elements. */
export function mergedIntervals(cidrs: readonly string[], family: Family): string[] {
  return spanElements(mergeCidrs(cidrs, family), family);
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
