# Sourced by the gateway benches: the upstream is nginx itself, copied into a sandbox named
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
