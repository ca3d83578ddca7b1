#!/usr/bin/env bash
# Where the CPU of a request goes (issue 14's missed throughput targets): CPU time per successful
# request of every process on the path, read from /proc/<pid>/stat around a run, against the same
# for the baseline, in one run:
# - h2c (h2load, 32 connections x 4 streams): straight to the sandbox's h2c server, and through the
#   gateway to that server as HTTP/2: nginx 1.26 alone on the port (the default, when setup built
#   it), then HAProxy's front before Debian's nginx (SBX_NGINX=/usr/sbin/nginx);
# - HTTP/1.1 (wrk, 32 connections): the same two gateways, and Debian's nginx alone with
#   SBX_GATEWAY_H2C=0 (no h2c, no front).
# On this 2-core machine the load generator, the proxies and the upstream share both cores, so a
# path that costs k times the CPU per request of another has at most about 1/k of its throughput.
# The upstream is nginx copied into a sandbox (bench/nginx-upstream.sh). DURATION (8) seconds a run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
for pkg in wrk nghttp2-client haproxy; do
  dpkg -s "$pkg" >/dev/null 2>&1 || { step "installing $pkg"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2; }
done
DURATION=${DURATION:-8}
export SBX_GATEWAY_PORT=0
source "$(dirname "$0")/nginx-upstream.sh"
H2C=1 bench_upstream

gw_json() { sbx gateway status --json | node -pe "JSON.parse(require('fs').readFileSync(0)).$1"; }
# CPU ticks so far of each part of the path, one "part user system" line each (user: the program's
# own code; system: the kernel's work for it, where loopback TCP's cost lands).
ticks() {
  local p c
  stat_of() { awk -v part="$1" '{print part, $14, $15}' "/proc/$2/stat"; }
  for p in $(pgrep -f "haproxy.*$SBX_HOME/run" || true); do stat_of haproxy "$p"; done
  for p in $(pgrep -f "nginx.*$SBX_HOME/run/nginx.conf" || true); do
    stat_of gateway-nginx "$p"
    for c in $(pgrep -P "$p" || true); do stat_of gateway-nginx "$c"; done
  done
  stat_of gateway-node "$(gw_json pid)"
  for p in $(pgrep -f "/tmp/up.conf" || true); do
    stat_of sandbox-nginx "$p"
    for c in $(pgrep -P "$p" || true); do stat_of sandbox-nginx "$c"; done
  done
}
sum_ticks() { ticks | awk '{u[$1]+=$2; k[$1]+=$3} END {for (p in u) print p, u[p], k[p]}' | sort; }
hz=$(getconf CLK_TCK)
# run LABEL COMMAND...: the command's own CPU (the load generator) and each part's, per 2xx answer.
# Processes that restart during a run (an nginx reload) would spoil it: the script waits for routes first.
run() {
  local label=$1 before after out ok self
  shift
  before=$(sum_ticks)
  out=$( { /usr/bin/time -f 'self %U %S' "$@"; } 2>&1 )
  after=$(sum_ticks)
  echo "$out" >&2
  ok=$(echo "$out" | awk '/^status codes:/ {print $3} /Requests\/sec/ {r=$2} /requests in/ {n=$1} END {if (n) print n}' | head -1)
  if echo "$out" | grep -q 'Non-2xx'; then echo "$label: errors, no figure" >&2; exit 1; fi
  self=$(echo "$out" | awk '/^self / {print ($2+$3)}')
  join <(echo "$before") <(echo "$after") | awk -v n="$ok" -v hz="$hz" -v label="$label" -v self="$self" '
    { user = ($4 - $2) / hz * 1e6 / n; sys = ($5 - $3) / hz * 1e6 / n; us = user + sys
      if (us >= 0.5) { parts = parts (parts ? "; " : "") sprintf("%s %.1f (user %.1f)", $1, us, user); total += us } }
    END { gen = self * 1e6 / n; printf "| %s | %d | %.1f | %s | %.1f |\n", label, n, gen, parts, total + gen }'
}

# Waits until nginx carries both ports itself, so that no run spans a reload: it carries a port's
# HTTP/2 as HTTP/2 once the Node gateway has asked the port (its first HTTP/2 request), and 8080 is
# learnt as HTTP/1.1 the same way.
routes_ready() {
  for _ in $(seq 1 50); do curl -sf --http2-prior-knowledge "http://8081-bench-up.sbx.localhost:$gw_port/" >/dev/null && grep -q '"8081-bench-up\.[^"]*" h2;' "$SBX_HOME/run/nginx.conf" && break; sleep 0.1; done
  for _ in $(seq 1 50); do curl -sf --http2-prior-knowledge "http://8080-bench-up.sbx.localhost:$gw_port/" >/dev/null && grep -q '"8080-bench-up\.[^"]*" h1;' "$SBX_HOME/run/nginx.conf" && break; sleep 0.1; done
  sleep 1.5
}
# This home's gateway again, with these settings (VAR=value ...).
restart_with() {
  sbx gateway stop >/dev/null
  env "$@" "$ROOT/bin/sbx" gateway start >/dev/null
  gw_port=$(gw_json port)
}
# The load through the gateway (run times them with /usr/bin/time, which runs programs, not functions).
h2load_gw() { run "$1" h2load -t1 -c32 -m4 -D"$DURATION" --connect-to="127.0.0.1:$gw_port" "http://8081-bench-up.sbx.localhost:$gw_port/"; }
wrk_gw() { run "$1" wrk -t1 -c32 -d"${DURATION}s" -H "Host: 8080-bench-up.sbx.localhost" "http://127.0.0.1:$gw_port/"; }

gw_port=$(gw_json port)
sbx port expose bench-up 8080 8081 >/dev/null
routes_ready

echo "| path | 2xx answers | load generator (µs/request) | each part on the path (µs of CPU per request; in brackets, its own code's share, the rest being the kernel's) | all (µs/request) |"
echo "| --- | --- | --- | --- | --- |"
run "h2c straight to the sandbox's h2c server" h2load -t1 -c32 -m4 -D"$DURATION" "http://$ip:8081/"
# The default: nginx 1.26 alone on the port when setup built it, else HAProxy before Debian's nginx.
if [ "$(gateway_h2c_by)" = nginx ]; then
  h2load_gw "h2c through the gateway (nginx 1.26 alone, the default) to the sandbox's h2c server"
  wrk_gw "HTTP/1.1 through the gateway (nginx 1.26 alone, h2c on the same port: the default)"
  restart_with SBX_NGINX=/usr/sbin/nginx
  routes_ready
fi
h2load_gw "h2c through the gateway (HAProxy, Debian's nginx) to the sandbox's h2c server"
wrk_gw "HTTP/1.1 through the gateway with its h2c front (HAProxy, then Debian's nginx)"
restart_with SBX_NGINX=/usr/sbin/nginx SBX_GATEWAY_H2C=0
for _ in $(seq 1 50); do curl -sf -H "Host: 8080-bench-up.sbx.localhost" "http://127.0.0.1:$gw_port/" >/dev/null && break; sleep 0.1; done
sleep 1
wrk_gw "HTTP/1.1 through the gateway without the front (Debian's nginx alone, SBX_GATEWAY_H2C=0)"
