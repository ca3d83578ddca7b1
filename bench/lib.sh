# Shared by the bench scripts: hyperfine from Debian, the project's Node, a throw-away SBX_HOME.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
command -v hyperfine >/dev/null || { step "installing hyperfine"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hyperfine >&2; }
# REUSE=1 (bench/scale.sh) brings the SBX_HOME of an earlier, held run: it is removed at the end too.
if [ -n "${REUSE:-}" ]; then BENCH_HOME=${SBX_HOME:?REUSE needs SBX_HOME}; else BENCH_HOME=$(mktemp -d /tmp/sbx-bench-XXXXXX); fi
export SBX_HOME="$BENCH_HOME"
OUT="$ROOT/bench/out"; mkdir -p "$OUT"
bench_cleanup() {
  # sbx's own removal also takes the sandboxes' egress rules; then its gateway goes.
  for name in $("$ROOT/bin/sbx" ls -q 2>/dev/null); do "$ROOT/bin/sbx" rm -f "$name" >/dev/null 2>&1 || true; done
  "$ROOT/bin/sbx" gateway stop >/dev/null 2>&1 || true
  for id in $(docker ps -aq --filter "label=sbx.home=$BENCH_HOME"); do docker rm -f "$id" >/dev/null; done
  for id in $(docker network ls -q --filter "label=sbx.home=$BENCH_HOME"); do docker network rm "$id" >/dev/null; done
  docker rm -f sbx-bench-raw sbx-bench-plain >/dev/null 2>&1 || true
  docker network rm sbx-bench-raw >/dev/null 2>&1 || true
  rm -rf "$BENCH_HOME"
  drop_idle_sbx_table
}
trap bench_cleanup EXIT
# Mean seconds of command N (0-based) in a hyperfine JSON export.
mean() { node -e "console.log(require('$1').results[$2].mean)"; }
