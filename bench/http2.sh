#!/usr/bin/env bash
# HTTP/2 and HTTPS through the gateway (issue 14), each against its baseline in one run:
# - h2c RPS with h2load (Debian's nghttp2-client): through the gateway against straight to the
#   sandbox's h2c server; target at least 0.8x. Both engines: Node (one run each; it carries HTTP/2
#   to the h2c server as HTTP/2), and nginx (the default: nginx 1.26 alone on the port, or Debian's
#   nginx behind the HAProxy front when that is what runs; ROUNDS rounds taking turns, medians), to
#   the sandbox's HTTP/1.1 server: nginx sends a port's HTTP/2 as HTTP/2
#   or HTTP/1.1 as the port speaks, once the Node gateway has asked it (README, HTTP/2 and gRPC),
#   and to the h2c server (carried as HTTP/2, grpc_pass);
# - HTTPS RPS (wrk, HTTP/1.1 over TLS; and h2load, HTTP/2 by ALPN): through the gateway with
#   SBX_GATEWAY_TLS=1 (its nginx ends TLS) against nginx on this host (the same binary) ending TLS with the same
#   certificate and key and proxying to the same upstream (both keep 128 idle connections to it, and
#   h2load keeps 128 requests in flight: 32 connections, 4 streams each);
#   ROUNDS (3) rounds taking turns, medians; target at least 0.8x. For context, a second nginx
#   that differs from the first only in answering unbuffered (`proxy_buffering off`), as the
#   gateway must so that a lone event of a stream is not held (README, HTTP/2 and gRPC);
# - port expose to the first 200 over HTTPS (curl --cacert, median of 5); target under 150 ms.
# The upstream is nginx copied into a sandbox: HTTP/1.1 on 8080, h2c on 8081.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
for pkg in wrk nginx-light nghttp2-client haproxy; do
  dpkg -s "$pkg" >/dev/null 2>&1 || { step "installing $pkg"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2; service nginx stop >/dev/null 2>&1 || true; }
done
DURATION=${DURATION:-10}
CONNS=${CONNS:-32}
export SBX_GATEWAY_PORT=0 SBX_GATEWAY_ENGINE=node
NGINX_DIR=$(mktemp -d /tmp/sbx-bench-nginx-XXXXXX)
NGINX_DIR_UNBUFFERED=$(mktemp -d /tmp/sbx-bench-nginx-XXXXXX)
cleanup_nginx() {
  local d
  for d in "$NGINX_DIR" "$NGINX_DIR_UNBUFFERED"; do [ -f "$d/nginx.pid" ] && kill "$(cat "$d/nginx.pid")" 2>/dev/null || true; done
  cp "$NGINX_DIR/error.log" "$OUT/http2-nginx-error.log" 2>/dev/null || true
  cp "$NGINX_DIR_UNBUFFERED/error.log" "$OUT/http2-nginx-unbuffered-error.log" 2>/dev/null || true
  rm -rf "$NGINX_DIR" "$NGINX_DIR_UNBUFFERED"
  bench_cleanup
}
trap cleanup_nginx EXIT

source "$(dirname "$0")/nginx-upstream.sh"
H2C=1 bench_upstream

h2rps() { # url [connect-to host:port]: successful requests/s of h2load, 1 thread, CONNS connections, 4 streams each
  local out
  if [ -n "${2:-}" ]; then out=$(h2load -t1 -c"$CONNS" -m4 -D"$DURATION" --connect-to="$2" "$1" 2>&1); else out=$(h2load -t1 -c"$CONNS" -m4 -D"$DURATION" "$1" 2>&1); fi
  echo "$out" >&2
  # Only 2xx answers count (h2load's "succeeded" counts any status): a baseline that answers 421
  # or 400 fast is no baseline, and nginx passes an h2c-only server's frames on as status 000.
  echo "$out" | awk '/^finished in/ {gsub(/s,/,""); t=$3} /^status codes:/ {ok=$3} END {printf "%.0f\n", ok/t}'
}
wrkrps() { # url host
  local out
  out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Host: $2" "$1")
  echo "$out" >&2
  # Errors answered fast are not throughput: a run with any is refused.
  if echo "$out" | grep -q 'Non-2xx'; then echo "wrk got errors from $1: no figure" >&2; exit 1; fi
  echo "$out" | awk '/Requests\/sec/ {print $2}'
}

step "h2c: straight to the sandbox, then through the gateway (Node engine)"
sbx port expose bench-up 8081 >/dev/null
gw_port=$(sbx gateway status --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).port')
for _ in $(seq 1 50); do curl -sf --http2-prior-knowledge "http://8081-bench-up.sbx.localhost:$gw_port/" >/dev/null && break; sleep 0.1; done
h2c_direct=$(h2rps "http://$ip:8081/")
h2c_gateway=$(h2rps "http://8081-bench-up.sbx.localhost:$gw_port/" "127.0.0.1:$gw_port")

# ROUNDS rounds, the two sides taking turns to go first (what one run leaves behind, such as
# TIME_WAIT sockets to the upstream, then weighs on both alike); each figure is the median.
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

step "h2c: the nginx engine (the default), against straight to the sandbox"
sbx gateway stop >/dev/null
unset SBX_GATEWAY_ENGINE
SBX_GATEWAY_H2C=1 sbx gateway start >/dev/null
gw_port=$(sbx gateway status --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).port')
h2c_by=$(gateway_h2c_by)
sbx port expose bench-up 8080 >/dev/null
for _ in $(seq 1 50); do curl -sf --http2-prior-knowledge "http://8080-bench-up.sbx.localhost:$gw_port/" >/dev/null && break; sleep 0.1; done
# The h2c-only server too: its first HTTP/2 request goes through the Node gateway, which asks the
# port; nginx then sends its HTTP/2 as HTTP/2 itself (grpc_pass), once its routes say "h2".
for _ in $(seq 1 50); do curl -sf --http2-prior-knowledge "http://8081-bench-up.sbx.localhost:$gw_port/" >/dev/null && grep -q '"8081-bench-up\.[^"]*" h2;' "$SBX_HOME/run/nginx.conf" && break; sleep 0.1; done
grep -q '"8081-bench-up\.[^"]*" h2;' "$SBX_HOME/run/nginx.conf" || { echo "nginx never learnt that 8081 speaks HTTP/2" >&2; exit 1; }
sleep 1 # nginx takes the route 300 ms after it is added (the Node gateway serves it until then)
fd=() fg=() fg2=()
for round in $(seq 1 "${ROUNDS:-3}"); do
  step "h2c round $round of ${ROUNDS:-3}"
  if [ $((round % 2)) = 1 ]; then
    fd+=("$(h2rps "http://$ip:8081/")")
    fg+=("$(h2rps "http://8080-bench-up.sbx.localhost:$gw_port/" "127.0.0.1:$gw_port")")
    fg2+=("$(h2rps "http://8081-bench-up.sbx.localhost:$gw_port/" "127.0.0.1:$gw_port")")
  else
    fg2+=("$(h2rps "http://8081-bench-up.sbx.localhost:$gw_port/" "127.0.0.1:$gw_port")")
    fg+=("$(h2rps "http://8080-bench-up.sbx.localhost:$gw_port/" "127.0.0.1:$gw_port")")
    fd+=("$(h2rps "http://$ip:8081/")")
  fi
done
echo "h2c direct: ${fd[*]}; through the gateway (h2c told by $h2c_by), to HTTP/1.1: ${fg[*]}; to h2c: ${fg2[*]}" >&2
h2c_front_direct=$(median "${fd[@]}") h2c_front=$(median "${fg[@]}") h2c_front_h2=$(median "${fg2[@]}")

step "HTTPS: the gateway with SBX_GATEWAY_TLS=1 (nginx engine), and nginx ending TLS with the same certificate"
sbx gateway stop >/dev/null
export SBX_GATEWAY_TLS=1
sbx port expose bench-up 8080 >/dev/null
gw_port=$(sbx gateway status --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).port')
ca=$(sbx ca 2>/dev/null)
cert="$SBX_HOME/tls/server/cert.pem" key="$SBX_HOME/tls/server/key.pem"
url="https://8080-bench-up.sbx.localhost:$gw_port/"
for _ in $(seq 1 50); do curl -sf --cacert "$ca" "$url" >/dev/null && break; sleep 0.1; done
tls_baseline() { # the baseline nginx ending TLS, in NGINX_DIR (PROXY_EXTRA from the caller)
  if baseline_http2_on; then
    LISTEN_EXTRA=" ssl" SERVER_EXTRA="http2 on; ssl_certificate $cert; ssl_certificate_key $key; " bench_baseline_nginx
  else
    LISTEN_EXTRA=" ssl http2" SERVER_EXTRA="ssl_certificate $cert; ssl_certificate_key $key; " bench_baseline_nginx
  fi
}
NGINX_DIR=$NGINX_DIR_UNBUFFERED PROXY_EXTRA="proxy_buffering off; " tls_baseline
unbuffered_port=$nginx_port
tls_baseline
hn=() hg=() h2n=() h2g=() hu=() h2u=()
for round in $(seq 1 "${ROUNDS:-3}"); do
  step "HTTPS round $round of ${ROUNDS:-3}"
  if [ $((round % 2)) = 1 ]; then
    hn+=("$(wrkrps "https://127.0.0.1:$nginx_port/" "8080-bench-up.sbx.localhost")")
    hg+=("$(wrkrps "https://127.0.0.1:$gw_port/" "8080-bench-up.sbx.localhost:$gw_port")")
    h2n+=("$(h2rps "https://8080-bench-up.sbx.localhost:$nginx_port/" "127.0.0.1:$nginx_port")")
    h2g+=("$(h2rps "https://8080-bench-up.sbx.localhost:$gw_port/" "127.0.0.1:$gw_port")")
    hu+=("$(wrkrps "https://127.0.0.1:$unbuffered_port/" "8080-bench-up.sbx.localhost")")
    h2u+=("$(h2rps "https://8080-bench-up.sbx.localhost:$unbuffered_port/" "127.0.0.1:$unbuffered_port")")
  else
    h2u+=("$(h2rps "https://8080-bench-up.sbx.localhost:$unbuffered_port/" "127.0.0.1:$unbuffered_port")")
    hu+=("$(wrkrps "https://127.0.0.1:$unbuffered_port/" "8080-bench-up.sbx.localhost")")
    hg+=("$(wrkrps "https://127.0.0.1:$gw_port/" "8080-bench-up.sbx.localhost:$gw_port")")
    hn+=("$(wrkrps "https://127.0.0.1:$nginx_port/" "8080-bench-up.sbx.localhost")")
    h2g+=("$(h2rps "https://8080-bench-up.sbx.localhost:$gw_port/" "127.0.0.1:$gw_port")")
    h2n+=("$(h2rps "https://8080-bench-up.sbx.localhost:$nginx_port/" "127.0.0.1:$nginx_port")")
  fi
done
echo "HTTPS h1 nginx: ${hn[*]}; unbuffered nginx: ${hu[*]}; gateway: ${hg[*]}; h2 nginx: ${h2n[*]}; unbuffered nginx: ${h2u[*]}; gateway: ${h2g[*]}" >&2
https_nginx=$(median "${hn[@]}") https_gateway=$(median "${hg[@]}")
https_unbuffered=$(median "${hu[@]}") h2tls_unbuffered=$(median "${h2u[@]}")
h2tls_nginx=$(median "${h2n[@]}") h2tls_gateway=$(median "${h2g[@]}")

step "port expose to the first 200 over HTTPS (median of 5)"
expose_ms=$(measure_expose "$url" --cacert "$ca")

node -e '
const [h2cD, h2cG, hN, hG, h2N, h2G, expose, fD, fG, fG2, hU, h2U] = process.argv.slice(1, 11).concat(process.argv.slice(12)).map(Number);
const by = process.argv[11] === "nginx" ? "nginx alone on the port, the default" : "nginx behind its HAProxy front, the default";
const f0 = (x) => x.toFixed(0), f2 = (x) => x.toFixed(2);
const row = (what, m, base, baseName, target = 0.8) => console.log(`| ${what} | ${f0(m)} | ${baseName}: ${f0(base)} | ${f2(m / base)}x | at least ${target}x | ${m / base >= target ? "met" : "MISSED"} |`);
row("h2c RPS through the gateway (h2load, Node engine)", h2cG, h2cD, "straight to the sandbox (h2c)");
row(`h2c RPS through the gateway (h2load, ${by}; to the HTTP/1.1 server)`, fG, fD, "straight to the sandbox (h2c)");
row(`h2c RPS through the gateway (h2load, ${by}; to the h2c server, as HTTP/2)`, fG2, fD, "straight to the sandbox (h2c)");
row("HTTPS RPS through the gateway (wrk, HTTP/1.1 over TLS, nginx engine)", hG, hN, "nginx ending TLS, same certificate");
row("HTTPS RPS through the gateway (h2load, HTTP/2 by ALPN, nginx engine)", h2G, h2N, "nginx ending TLS, same certificate");
const context = (what, m, base, baseName) => console.log(`| ${what} | ${f0(m)} | ${baseName}: ${f0(base)} | ${f2(m / base)}x | (context) | |`);
context("HTTPS RPS through the gateway (wrk, HTTP/1.1 over TLS)", hG, hU, "nginx ending TLS, answering unbuffered as the gateway does");
context("HTTPS RPS through the gateway (h2load, HTTP/2 by ALPN)", h2G, h2U, "nginx ending TLS, answering unbuffered as the gateway does");
console.log(`| port expose to first 200 over HTTPS | ${f0(expose)} ms | | | under 150 ms | ${expose < 150 ? "met" : "MISSED"} |`);
' "$h2c_direct" "$h2c_gateway" "$https_nginx" "$https_gateway" "$h2tls_nginx" "$h2tls_gateway" "$expose_ms" "$h2c_front_direct" "$h2c_front" "$h2c_front_h2" "$h2c_by" "$https_unbuffered" "$h2tls_unbuffered"
