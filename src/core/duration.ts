// Durations for --ttl: 30s, 10m, 2h, 1d, or a combination such as 1h30m (pure).
import { UsageError } from './errors.ts';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(value: string): number {
  const s = value.trim();
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/gy;
  let total = 0;
  let m: RegExpExecArray | null;
  let consumed = 0;
  while ((m = re.exec(s))) {
    total += Number(m[1]) * UNITS[m[2]!]!;
    consumed = re.lastIndex;
  }
  if (s.length === 0 || consumed !== s.length || total < 1000) {
    throw new UsageError(`invalid duration "${value}": use a number with s, m, h or d, e.g. 30s, 10m, 2h or 1h30m (at least 1s)`);
  }
  return Math.round(total);
}
