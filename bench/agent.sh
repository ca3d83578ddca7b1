#!/usr/bin/env bash
# Agent mode (SBX_AGENT=1) on the local engine against host mode and raw docker, in one run:
# `sbx create` + `rm` (the agent does the work; the CLI reaches it by its socket, and by
# `docker exec` as a remote engine is reached), and `sbx ls`. Target: create+rm at most 1.15x
# raw docker doing the same work; ls no slower than host mode's by more than a socket round trip.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
RUNS=${RUNS:-15}
export SBX_GATEWAY_PORT=0
raw_cmd="docker network create --label sbx.bench=1 -o com.docker.network.bridge.name=sbx-bench-raw -o com.docker.network.bridge.enable_icc=false sbx-bench-raw >/dev/null \
 && docker run -d --name sbx-bench-raw --network sbx-bench-raw --hostname bench --init --cap-drop ALL --cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add FOWNER --cap-add FSETID --cap-add SETUID --cap-add SETGID --cap-add KILL --cap-add NET_BIND_SERVICE --pids-limit 1024 --security-opt no-new-privileges --sysctl net.ipv6.conf.lo.disable_ipv6=0 --label sbx.bench=1 sbx/base:bookworm sleep infinity >/dev/null \
 && docker rm -f sbx-bench-raw >/dev/null && docker network rm sbx-bench-raw >/dev/null"
AGENT_HOME=$(mktemp -d /tmp/sbx-bench-agent-XXXXXX)
agent() { SBX_AGENT=1 SBX_HOME="$AGENT_HOME" "$ROOT/bin/sbx" "$@"; }
agent_cleanup() {
  for name in $(agent ls -q 2>/dev/null); do agent rm -f "$name" >/dev/null 2>&1 || true; done
  local key
  key=$(SBX_HOME="$AGENT_HOME" node --input-type=module -e "const { agentNames } = await import('$ROOT/src/api/agent-backend.ts'); console.log(agentNames(process.env.SBX_HOME).key)")
  docker rm -f "sbx-agent-$key" >/dev/null 2>&1 || true
  docker volume rm -f "sbx-agent-$key" >/dev/null 2>&1 || true
  rm -rf "/run/sbx-agent/$key" "$AGENT_HOME"
  bench_cleanup
}
trap agent_cleanup EXIT
agent ls >/dev/null   # starts the agent (and builds its image when this build has none)
sbx create --name bench-ls >/dev/null; agent create --name bench-ls >/dev/null
hyperfine -w 2 -r "$RUNS" --export-json "$OUT/agent.json" \
  --prepare "$ROOT/bin/sbx gateway start >/dev/null" -n 'host mode create + rm' "$ROOT/bin/sbx create --name bench-c >/dev/null && $ROOT/bin/sbx rm --force bench-c >/dev/null" \
  --prepare true -n 'agent mode create + rm' "SBX_AGENT=1 SBX_HOME=$AGENT_HOME $ROOT/bin/sbx create --name bench-c >/dev/null && SBX_AGENT=1 SBX_HOME=$AGENT_HOME $ROOT/bin/sbx rm --force bench-c >/dev/null" \
  --prepare true -n 'agent mode create + rm, docker exec' "SBX_AGENT_VIA=exec SBX_AGENT=1 SBX_HOME=$AGENT_HOME $ROOT/bin/sbx create --name bench-c >/dev/null && SBX_AGENT_VIA=exec SBX_AGENT=1 SBX_HOME=$AGENT_HOME $ROOT/bin/sbx rm --force bench-c >/dev/null" \
  --prepare true -n 'raw docker, same work' "$raw_cmd" >&2
hyperfine -N -w 3 -r 30 --export-json "$OUT/agent-ls.json" \
  'node -e 0' "$ROOT/bin/sbx ls" "env SBX_AGENT=1 SBX_HOME=$AGENT_HOME $ROOT/bin/sbx ls" "env SBX_AGENT_VIA=exec SBX_AGENT=1 SBX_HOME=$AGENT_HOME $ROOT/bin/sbx ls" >&2
node -e '
const c = require(process.argv[1]).results.map((x) => x.mean * 1000);
const l = require(process.argv[2]).results.map((x) => x.mean * 1000);
const f = (x) => x.toFixed(0), r = (a, b) => (a / b).toFixed(2);
console.log(`| create + rm, agent mode (socket) | ${f(c[1])} ms | raw docker, same work: ${f(c[3])} ms | ${r(c[1], c[3])}x | at most 1.15x | ${c[1] / c[3] <= 1.15 ? "met" : "MISSED"} |`);
console.log(`| create + rm, agent mode (docker exec, as for a remote engine) | ${f(c[2])} ms | raw docker, same work: ${f(c[3])} ms | ${r(c[2], c[3])}x | (context) | |`);
console.log(`| create + rm, host mode | ${f(c[0])} ms | raw docker, same work: ${f(c[3])} ms | ${r(c[0], c[3])}x | (context) | |`);
console.log(`| sbx ls, agent mode (socket) | ${f(l[2])} ms | host mode: ${f(l[1])} ms (node -e 0: ${f(l[0])} ms) | +${f(l[2] - l[1])} ms | (context) | |`);
console.log(`| sbx ls, agent mode (docker exec) | ${f(l[3])} ms | host mode: ${f(l[1])} ms | +${f(l[3] - l[1])} ms | (context) | |`);
' "$OUT/agent.json" "$OUT/agent-ls.json"
