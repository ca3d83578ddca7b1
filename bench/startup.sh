#!/usr/bin/env bash
# Start-up: `sbx --version` and `sbx ls` against `node -e 0`, and peak memory of `sbx ls`.
# Target: at most 80 ms over bare node for both; `sbx ls` under 80 MiB.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
sbx create --name bench-ls >/dev/null   # ls talks to the engine about one sandbox
hyperfine -N -w 5 -r 40 --export-json "$OUT/startup.json" 'node -e 0' "$ROOT/bin/sbx --version" "$ROOT/bin/sbx ls" >&2
node_ms=$(node -p "$(mean "$OUT/startup.json" 0)*1000")
ver_ms=$(node -p "$(mean "$OUT/startup.json" 1)*1000")
ls_ms=$(node -p "$(mean "$OUT/startup.json" 2)*1000")
peak=0
for _ in 1 2 3 4 5; do
  kb=$(/usr/bin/time -f %M "$ROOT/bin/sbx" ls 2>&1 >/dev/null | tail -1)
  [ "$kb" -gt "$peak" ] && peak=$kb
done
node -e '
const [n, v, l, kb] = process.argv.slice(1).map(Number);
const f = (x) => x.toFixed(1);
console.log(`| sbx --version | ${f(v)} ms | node -e 0: ${f(n)} ms | +${f(v - n)} ms | at most +80 ms | ${v - n <= 80 ? "met" : "MISSED"} |`);
console.log(`| sbx ls (1 sandbox) | ${f(l)} ms | node -e 0: ${f(n)} ms | +${f(l - n)} ms | at most +80 ms | ${l - n <= 80 ? "met" : "MISSED"} |`);
console.log(`| sbx ls peak memory (max RSS of 5 runs) | ${f(kb / 1024)} MiB | | | under 80 MiB | ${kb / 1024 < 80 ? "met" : "MISSED"} |`);
' "$node_ms" "$ver_ms" "$ls_ms" "$peak"
