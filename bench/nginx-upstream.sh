# Sourced by the gateway benches (what they share). The upstream is nginx itself, copied into a sandbox named
# bench-up (same Debian release, same libraries), so that it is not the bottleneck. It answers
# "hello" with HTTP/1.1 on 8080 and, with H2C=1, with HTTP/2 (prior knowledge) on 8081.
# Sets `ip`, the sandbox's address.
bench_upstream() {
  local box h2c=''
  box=$(sbx create --name bench-up --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).container')
  docker cp /usr/sbin/nginx "$box:/usr/sbin/nginx" >/dev/null
  [ -n "${H2C:-}" ] && h2c='server { listen 8081 http2 backlog=4096; keepalive_requests 1000000; location / { return 200 "hello\n"; } }'
  sbx exec -i bench-up -- sh -c 'cat > /tmp/up.conf' <<CONF
user root; worker_processes 1; pid /tmp/up.pid; error_log stderr;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path /tmp; proxy_temp_path /tmp; fastcgi_temp_path /tmp; uwsgi_temp_path /tmp; scgi_temp_path /tmp;
  server { listen 8080 backlog=4096; keepalive_requests 1000000; location / { return 200 "hello\n"; } }
  $h2c }
CONF
  sbx exec -d bench-up -- /usr/sbin/nginx -c /tmp/up.conf -g 'daemon off;'
  ip=$(sbx inspect bench-up --json | node -pe 'JSON.parse(require("fs").readFileSync(0)).ip')
  for _ in $(seq 1 50); do curl -sf "http://$ip:8080/" >/dev/null && break; sleep 0.1; done
}

# Median of 5 rounds of `port rm` then `port expose` of bench-up 8080 to the first 200 at URL
# (curl's extra options after it: --cacert for HTTPS), in ms.
measure_expose() {
  node -e '
const { execFileSync } = require("child_process");
const [sbx, url, ...curlOpts] = process.argv.slice(1);
const runs = [];
for (let i = 0; i < 5; i++) {
  execFileSync(sbx, ["port", "rm", "bench-up", "8080"], { stdio: "ignore" });
  const t0 = process.hrtime.bigint();
  execFileSync(sbx, ["port", "expose", "bench-up", "8080"], { stdio: "ignore" });
  for (;;) { try { execFileSync("curl", ["-sf", ...curlOpts, "-o", "/dev/null", url]); break; } catch {} }
  runs.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
console.log(runs.sort((a, b) => a - b)[2].toFixed(0));
' "$ROOT/bin/sbx" "$@"
}

# The baseline's nginx: the binary the gateway uses (the 1.26 that scripts/setup builds, else
# Debian's), so that gateway and baseline differ in what sbx does, not in nginx's version.
BASELINE_NGINX=${BASELINE_NGINX:-$([ -x /usr/local/lib/sbx/nginx/sbin/nginx ] && echo /usr/local/lib/sbx/nginx/sbin/nginx || echo nginx)}
# Whether it switches HTTP/2 on with `http2 on;` (1.25.1 and later) rather than `listen ... http2`.
baseline_http2_on() { "$BASELINE_NGINX" -v 2>&1 | grep -qE 'nginx/(1\.(2[6-9]|[3-9][0-9])\.|1\.25\.([1-9])|[2-9]\.)'; }
# Which part tells h2c from HTTP/1.1 on the running gateway's port (its log): nginx or HAProxy.
gateway_h2c_by() { grep -oE 'h2c: (nginx|HAProxy) ' "$SBX_HOME/gateway.log" 2>/dev/null | tail -1 | awk '{print $2}'; }

# nginx on this host proxying to bench-up's 8080 (the baseline), one worker like the one gateway
# process, in NGINX_DIR; LISTEN_EXTRA and SERVER_EXTRA add to its listen and server lines (TLS),
# PROXY_EXTRA to its location (proxy_buffering off: the gateway's streaming answers).
# Sets `nginx_port`. Its workers run as root: sbx lets only root and the gateway's own user open
# connections into a sandbox (as nobody, nginx's default, every request would be a fast 502).
bench_baseline_nginx() {
  nginx_port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  cat > "$NGINX_DIR/nginx.conf" <<CONF
user root; worker_processes 1; pid $NGINX_DIR/nginx.pid; error_log $NGINX_DIR/error.log;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $NGINX_DIR; proxy_temp_path $NGINX_DIR; fastcgi_temp_path $NGINX_DIR; uwsgi_temp_path $NGINX_DIR; scgi_temp_path $NGINX_DIR;
  upstream up { server $ip:8080; keepalive 128; keepalive_timeout 15s; }
  server { listen 127.0.0.1:$nginx_port${LISTEN_EXTRA:-}; ${SERVER_EXTRA:-}keepalive_requests 1000000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; ${PROXY_EXTRA:-}} } }
CONF
  # -e: the built nginx's default error log (under its prefix) does not exist, and it would say so.
  "$BASELINE_NGINX" -e "$NGINX_DIR/error.log" -c "$NGINX_DIR/nginx.conf"
  echo "baseline nginx: $("$BASELINE_NGINX" -v 2>&1)" >&2
}
