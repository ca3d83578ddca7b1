#!/usr/bin/env bash
# The gateway against a direct connection and against nginx (the binary the gateway uses: see nginx-upstream.sh) proxying the
# same upstream, in one run with wrk: requests per second and p99 latency. The upstream is nginx
# itself, copied into a sandbox (same Debian release, same libraries), so it is not the
# bottleneck. Also: time from `sbx port expose` to the first 200 (median of 5), the gateway's memory, and
# RPS and expose-to-first-200 again with 25 sandboxes that have ports (within 20% of one).
# Targets: >= 0.8x nginx's RPS, p99 added latency < 2 ms, expose-to-200 < 150 ms.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
for pkg in wrk nginx-light; do
  dpkg -s "$pkg" >/dev/null 2>&1 || { step "installing $pkg"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2; service nginx stop >/dev/null 2>&1 || true; }
done
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
export SBX_GATEWAY_PORT=0
NGINX_DIR=$(mktemp -d /tmp/sbx-bench-nginx-XXXXXX)
cleanup_nginx() { [ -f "$NGINX_DIR/nginx.pid" ] && kill "$(cat "$NGINX_DIR/nginx.pid")" 2>/dev/null; rm -rf "$NGINX_DIR"; sbx gateway stop >/dev/null 2>&1 || true; bench_cleanup; }
trap cleanup_nginx EXIT

source "$(dirname "$0")/nginx-upstream.sh"
bench_upstream

# Expose-to-first-200 (the gateway already runs, as it does once any port is exposed).
sbx gateway start >/dev/null
gw_port=$(sbx gateway status --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).port')
gw_pid=$(sbx gateway status --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).pid')
gw_h2c=$(sbx gateway status --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).h2c')
h2c_by=$(gateway_h2c_by)
sbx port expose bench-up 8080 >/dev/null
expose_ms=$(measure_expose "http://8080-bench-up.sbx.localhost:$gw_port/")
# Context for the expose figure: a CLI run costs at least Node's own start.
node_ms=$(node -e '
const { execFileSync } = require("child_process"); const runs = [];
for (let i = 0; i < 5; i++) { const t0 = process.hrtime.bigint(); execFileSync(process.execPath, ["-e", "0"]); runs.push(Number(process.hrtime.bigint() - t0) / 1e6); }
console.log(runs.sort((a, b) => a - b)[2].toFixed(0));')
rss_rest=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status")

bench_baseline_nginx

run_wrk() { # name url [host] [connections]
  local out c=${4:-$CONNS}
  if [ -n "${3:-}" ]; then out=$(wrk -t1 -c"$c" -d"${DURATION}s" --latency -H "Host: $3" "$2"); else out=$(wrk -t1 -c"$c" -d"${DURATION}s" --latency "$2"); fi
  echo "$out" >&2
  # Errors answered fast are not throughput: a run with any gives no figure.
  if echo "$out" | grep -q 'Non-2xx'; then echo "wrk got errors from $2: no figure" >&2; exit 1; fi
  local rps p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}')
  echo "$1 $rps $p99"
}
# Restarts this home's gateway with the given settings (none: the default) and waits for its first 200.
restart_gateway() {
  sbx gateway stop >/dev/null
  env "$@" "$ROOT/bin/sbx" gateway start >/dev/null
  gw_port=$(sbx gateway status --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).port')
  gw_pid=$(sbx gateway status --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).pid')
  for _ in $(seq 1 50); do curl -sf -H "Host: 8080-bench-up.sbx.localhost" "http://127.0.0.1:$gw_port/" >/dev/null && break; sleep 0.1; done
}
# Throughput in ROUNDS rounds, the order turning each round, so that a slow stretch of this noisy
# machine falls on every side alike: nginx, the default gateway (with the h2c front when HAProxy is
# installed) and, with the front, the same gateway with SBX_GATEWAY_H2C=0 (nginx alone on the
# port). The figures are medians of the rounds; front against no front is the median of each
# round's own ratio.
ROUNDS=${ROUNDS:-3}
step "wrk: direct (${DURATION}s, $CONNS connections)"
direct=$(run_wrk direct "http://$ip:8080/")
sides=(nginx gateway)
[ "$gw_h2c" = true ] && sides+=(alone)
nginx_runs="" gateway_runs="" alone_runs="" current=default rss_peak=0 nginx_kb=0
for round in $(seq 1 "$ROUNDS"); do
  order=("${sides[@]:$(( (round - 1) % ${#sides[@]} ))}" "${sides[@]:0:$(( (round - 1) % ${#sides[@]} ))}")
  step "round $round of $ROUNDS: ${order[*]} (${DURATION}s each, $CONNS connections)"
  for side in "${order[@]}"; do
    case $side in
      nginx) nginx_runs+="$(run_wrk nginx "http://127.0.0.1:$nginx_port/" "8080-bench-up.sbx.localhost");" ;;
      gateway)
        [ "$current" = default ] || { restart_gateway; current=default; }
        gateway_runs+="$(run_wrk gateway "http://127.0.0.1:$gw_port/" "8080-bench-up.sbx.localhost:$gw_port");"
        peak=$(awk '/VmHWM/ {print $2}' "/proc/$gw_pid/status")
        [ "$peak" -gt "$rss_peak" ] && rss_peak=$peak
        # The fast path's nginx (master and worker), under load.
        nginx_master=$(cat "$SBX_HOME/run/nginx.pid" 2>/dev/null || echo 0)
        nginx_kb=$( { ps -o rss= -p "$nginx_master"; ps -o rss= --ppid "$nginx_master"; } 2>/dev/null | awk '{s+=$1} END {print s+0}') ;;
      alone)
        [ "$current" = alone ] || { restart_gateway SBX_GATEWAY_H2C=0; current=alone; }
        alone_runs+="$(run_wrk gateway-alone "http://127.0.0.1:$gw_port/" "8080-bench-up.sbx.localhost:$gw_port");" ;;
    esac
  done
done
[ "$current" = default ] || restart_gateway
step "wrk: direct, nginx, gateway (${DURATION}s each, 1 connection: added latency without queueing)"
direct1=$(run_wrk direct "http://$ip:8080/" "" 1)
nginx1=$(run_wrk nginx "http://127.0.0.1:$nginx_port/" "8080-bench-up.sbx.localhost" 1)
gateway1=$(run_wrk gateway "http://127.0.0.1:$gw_port/" "8080-bench-up.sbx.localhost:$gw_port" 1)

# The same with 25 sandboxes that have ports (24 more, each with an exposed port, idle).
FILL=${FILL:-24}
step "creating $FILL more sandboxes with exposed ports"
seq 1 "$FILL" | xargs -P 8 -I{} "$ROOT/bin/sbx" create --name "bench-fill-{}" -p 8080 --json >/dev/null
# Idle sandboxes are the case: let the engine finish the new containers' start-up work first
# (measured right after the creates, RPS dips to about 0.6x for some seconds, then recovers).
sleep "${SETTLE:-10}"
expose25_ms=$(measure_expose "http://8080-bench-up.sbx.localhost:$gw_port/")
step "wrk: gateway with $((FILL + 1)) sandboxes with ports (${DURATION}s, $CONNS connections)"
gateway25=$(run_wrk gateway "http://127.0.0.1:$gw_port/" "8080-bench-up.sbx.localhost:$gw_port")

node -e '
const parse = (l) => { const [name, rps, p99] = l.split(" "); return { name, rps: Number(rps), p99: Number(p99) }; };
const runs = (text) => text.split(";").filter(Boolean).map(parse);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const of = (rs) => ({ rps: median(rs.map((r) => r.rps)), p99: median(rs.map((r) => r.p99)) });
const [d, d1, n1, g1] = [1, 4, 5, 6].map((i) => parse(process.argv[i]));
const [nRuns, gRuns, aRuns] = [2, 3, 15].map((i) => runs(process.argv[i] || ""));
const n = of(nRuns), g = of(gRuns);
const each = (rs) => rs.map((r) => r.rps.toFixed(0)).join(", ");
const [expose, rest, peak, ngx, expose25] = process.argv.slice(7, 12).map(Number);
const g25 = parse(process.argv[12]);
const nodeMs = Number(process.argv[13]);
const n25 = Number(process.env.FILL || 24) + 1;
const f0 = (x) => x.toFixed(0), f2 = (x) => x.toFixed(2);
const ratio = g.rps / n.rps, added = g.p99 - d.p99;
const front = process.argv[14] !== "true" ? "" : process.argv[16] === "nginx" ? " (nginx 1.26 alone, h2c on the same port: the default)" : " (nginx behind its HAProxy h2c front, the default)";
console.log(`| RPS through the gateway${front}, median of ${gRuns.length} rounds (${each(gRuns)}) | ${f0(g.rps)} | nginx proxy: ${f0(n.rps)} (${each(nRuns)}; direct: ${f0(d.rps)}) | ${f2(ratio)}x nginx | at least 0.8x | ${ratio >= 0.8 ? "met" : "MISSED"} |`);
if (aRuns.length) {
  const a = of(aRuns), r = a.rps / n.rps;
  console.log(`| RPS through the gateway, SBX_GATEWAY_H2C=0 (nginx alone on the port, HTTP/1.1 only), median of ${aRuns.length} rounds (${each(aRuns)}) | ${f0(a.rps)} | nginx proxy: ${f0(n.rps)} | ${f2(r)}x nginx | at least 0.8x | ${r >= 0.8 ? "met" : "MISSED"} |`);
  const paired = median(gRuns.map((x, i) => x.rps / aRuns[i].rps));
  console.log(`| cost of h2c on the port (${process.argv[16] === "nginx" ? "nginx with http2 on" : "the HAProxy front"}) for HTTP/1.1: default gateway against SBX_GATEWAY_H2C=0, median of the ratio in each round | ${f2(paired)}x | | | (context) | |`);
}
const added1 = g1.p99 - d1.p99;
console.log(`| p99 latency, 1 connection | ${f2(g1.p99)} ms | direct: ${f2(d1.p99)} ms (nginx: ${f2(n1.p99)} ms) | +${f2(added1)} ms | under +2 ms | ${added1 < 2 ? "met" : "MISSED"} |`);
console.log(`| p99 latency, ${process.env.CONNS || 32} connections (saturated) | ${f2(g.p99)} ms | direct: ${f2(d.p99)} ms (nginx: ${f2(n.p99)} ms) | +${f2(added)} ms | (context: queueing) | |`);
console.log(`| port expose to first 200 | ${f0(expose)} ms | node -e 0: ${f0(nodeMs)} ms | +${f0(expose - nodeMs)} ms | under 150 ms | ${expose < 150 ? "met" : "MISSED"} |`);
const rpsRatio = g25.rps / g.rps, exposeRatio = expose25 / expose;
console.log(`| RPS through the gateway, ${n25} sandboxes with ports | ${f0(g25.rps)} | 1 sandbox: ${f0(g.rps)} | ${f2(rpsRatio)}x | within 20% | ${rpsRatio >= 0.8 ? "met" : "MISSED"} |`);
console.log(`| port expose to first 200, ${n25} sandboxes with ports | ${f0(expose25)} ms | 1 sandbox: ${f0(expose)} ms | ${f2(exposeRatio)}x | within 20% | ${exposeRatio <= 1.2 ? "met" : "MISSED"} |`);
console.log(`| gateway memory: Node process at rest / peak; its nginx under load | ${f0(rest / 1024)} / ${f0(peak / 1024)} MiB; ${f0(ngx / 1024)} MiB | | | | |`);
' "$direct" "$nginx_runs" "$gateway_runs" "$direct1" "$nginx1" "$gateway1" "$expose_ms" "$rss_rest" "$rss_peak" "$nginx_kb" "$expose25_ms" "$gateway25" "$node_ms" "$gw_h2c" "$alone_runs" "$h2c_by"
