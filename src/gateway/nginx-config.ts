// The gateway's fast path (pure): an nginx configuration in which the public ports of running
// sandboxes go straight from nginx to the sandbox's bridge address, and everything else (private
// ports, sleeping sandboxes, loopback-only servers, path routing, tunnels, errors) goes to the Node
// gateway, which handles it exactly as it would on its own. The Node gateway stays the one that
// decides: it writes this file from the store and Docker's state, and reloads nginx.

/** The Host the Node gateway uses to ask nginx for its configuration version. */
/** How long an old nginx worker may finish what it began after a reload (must be < SUBNET_REST_MS). */
export const WORKER_SHUTDOWN_S = 10;

export const CONTROL_HOST = 'sbx-gateway-control.invalid';

export interface DirectRoute {
  /** Lower-case host names without port, e.g. 3000-web.sbx.localhost and 3000-<id>.sbx.localhost. */
  hosts: string[];
  /** Upstream block name: letters, digits and underscores. */
  name: string;
  /** ip:port of the sandbox's server on its bridge. */
  address: string;
  /** Host header to send instead of the client's (--mask-host). */
  hostHeader?: string;
  /**
   * What the port answered HTTP/2's preface with, once the Node gateway has asked (h2-upstream.ts):
   * HTTP/2 requests then go straight to it as HTTP/2 (grpc_pass) or HTTP/1.1 (proxy_pass); until
   * then, through the Node gateway, which asks.
   */
  h2?: 'h1' | 'h2';
}

export interface NginxConfigInput {
  listenHost: string;
  listenPort: number;
  /** The Node gateway's internal unix socket. */
  nodeSocket: string;
  /** Folder for nginx's pid and error log (and its temp files, unless tempDir names another). */
  runDir: string;
  /** Folder for the temp files, which the workers write (with the node socket, when they are not root). */
  tempDir?: string;
  routes: DirectRoute[];
  /** Increases with every change; answered on /_sbx/config-version so reloads can be awaited. */
  version: number;
  /** This nginx's start token, answered after the version ("<version> <instance>"). */
  instance?: string;
  upstreamTimeoutMs: number;
  /** Run workers as this user (and group), when started as root: `root`, or `sbx-gateway sbx-gateway`. */
  user?: string;
  /** Serve HTTPS (SBX_GATEWAY_TLS): HTTP/2 by ALPN and HTTP/1.1, with this certificate and key (PEM files). */
  tls?: { cert: string; key: string };
  /**
   * Behind the h2c front (haproxy-config.ts): no TCP listener, but unix sockets that take a PROXY
   * protocol line first, one for HTTP/1.1 and one for HTTP/2 with prior knowledge; and one without
   * it, for the gateway's own probes.
   */
  front?: { h1Socket: string; h2cSocket: string; controlSocket: string };
  /**
   * nginx 1.25.1 or later (nginx.ts nginxTakesH2c): HTTP/2 is switched on per server (`http2 on;`),
   * not by a `listen` parameter, and a plaintext listener with it takes h2c beside HTTP/1.1.
   */
  http2Directive?: boolean;
  /** Plain HTTP with h2c on the TCP listener itself (needs http2Directive; no front). */
  h2c?: boolean;
  /** The hard limit on open files nginx may raise its workers' to (open-files.ts); none: as many as it wants. */
  openFiles?: number;
  /** Requests in flight (HTTP/2: streams) one client address may have at once; loopback ones are not counted. 0: no limit. */
  sourceLimit?: number;
}

/**
 * The Cookie header without sbx_token, for public ports (which nginx sends straight to the
 * sandbox: the Node gateway, which strips it itself, needs it for private ones). A map removes one
 * occurrence, so a few are chained; a header with more than that loses all its cookies.
 */
const COOKIE_PASSES = 3;
/**
 * Idle connections the worker keeps open to one sandbox's port, and how long. HTTP/2 clients
 * multiplex many requests on few connections, each one upstream connection: past this many at
 * once nginx closes the extra ones after each request, and at thousands a second the TIME_WAIT
 * sockets to that one ip:port use up the local ports (measured: 27,000 in 20 s with 320 requests
 * in flight against 64), after which connects fail and requests fall to the slow backup. Idle
 * ones count against worker_connections until they time out (nginx never reclaims them), so the
 * cache stays small and short-lived: 128 busy routes would be needed to fill WORKER_CONNECTIONS.
 */
export const UPSTREAM_KEEPALIVE = 128;
const WORKER_CONNECTIONS = 16384;
/**
 * The same for HTTP/2 to a sandbox port (grpc_pass). nginx sends one stream per upstream connection
 * (it does not multiplex them), so the same number: with 16, h2load's 128 streams at once against
 * an h2c-only server made nginx close about 112 connections a round, TIME_WAIT used up the local
 * ports to that ip:port within seconds, and the rate fell from 5,954 to 246 requests/s over three
 * runs of bench/http2.sh (straight connections to the sandbox failed too).
 */
const H2_UPSTREAM_KEEPALIVE = UPSTREAM_KEEPALIVE;
/** Headers nginx would obey from an upstream (ignored from sandboxes on every path). */
const ACCEL_HEADERS = 'X-Accel-Redirect X-Accel-Expires X-Accel-Limit-Rate X-Accel-Charset X-Accel-Buffering';
function cookieMaps(): string {
  const passes: string[] = [];
  for (let i = 1; i <= COOKIE_PASSES; i++) {
    const from = i === 1 ? '$http_cookie' : `$sbx_cookie_${i - 1}`;
    passes.push(`  map ${from} $sbx_cookie_${i} {
    default ${from};
    "~^\\s*sbx_token\\s*=[^;]*(?:;\\s*)?(.*)$" $1;
    "~^(.*?);\\s*sbx_token\\s*=[^;]*(.*)$" $1$2;
  }`);
  }
  return `${passes.join('\n')}
  map $sbx_cookie_${COOKIE_PASSES} $sbx_cookie_public {
    default $sbx_cookie_${COOKIE_PASSES};
    "~(?:^|;)\\s*sbx_token\\s*=" "";
  }
  map $sbx_upstream $sbx_cookie {
    sbx_node $http_cookie;
    default $sbx_cookie_public;
  }
  # The token header too (sbx fetch sends it to public ports as well).
  map $sbx_upstream $sbx_token_header {
    sbx_node $http_x_sbx_traffic_token;
    default "";
  }`;
}

/**
 * The name nginx knows an upstream block by. With `proxy_pass http://$variable`, nginx finds the
 * block on every request by walking all of them and comparing names of the same length
 * (ngx_http_upstream_init_request): a thousand names of one length made the last sandbox's route
 * 0.6x as fast as the first's. Padding each name to one of NAME_SPREAD lengths (by a hash of it)
 * leaves about 1/NAME_SPREAD of them to compare; the rest are told apart by their length alone.
 */
const NAME_SPREAD = 256;
export function upstreamName(name: string): string {
  let h = 0x811c9dc5; // FNV-1a
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return name + '_'.repeat(h % NAME_SPREAD);
}

/** nginx strings: double-quoted with escapes, so no value can break out of its directive. */
function q(value: string): string {
  return `"${value.replace(/[\\"$]/g, (c) => (c === '$' ? '${dollar}' : `\\${c}`))}"`;
}

/**
 * What every proxied location sends on (both the direct routes and the Node gateway's).
 * Unbuffered both ways: an upload streams to the sandbox as it comes, and each piece of an answer
 * goes to the client at once. Buffered answers are faster for small HTTP/2 answers (bench/RESULTS.md)
 * but hold a lone event of a stream until more follows or the stream ends (measured: 3 s, the
 * length of the pause; ingress.test.ts "a lone piece"), and each unread chunk costs memory.
 * X-Accel-* headers from a sandbox are nobody's orders: an X-Accel-Redirect would send the request
 * on inside the gateway, so they are ignored.
 */
const PROXIED = `      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $sbx_connection;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_ignore_headers ${ACCEL_HEADERS};
      proxy_request_buffering off;`;

/**
 * HTTPS: TLS ends in nginx, and HTTP/2 comes by ALPN. A gRPC call (HTTP/2, application/grpc) goes
 * on as HTTP/2 with grpc_pass, to the sandbox for a direct route and to the Node gateway (h2c on
 * its socket) for the rest: proxy_pass would carry it as HTTP/1.1, which gRPC cannot use.
 */
function tlsSettings(tls: NonNullable<NginxConfigInput['tls']>): string {
  return `  ssl_certificate ${q(tls.cert)};
  ssl_certificate_key ${q(tls.key)};
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:sbx_tls:1m;`;
}

/**
 * Where HTTP/2 arrives (TLS, or the h2c front): gRPC calls are told by their content type, over
 * HTTP/2 only; gRPC-Web (application/grpc-web...) is HTTP/1.1-friendly and goes as any request.
 */
const GRPC_MAP = '  map "$server_protocol:$http_content_type" $sbx_grpc { default 0; "~^HTTP/2\\.0:application/grpc($|[+;])" 1; }';
/**
 * How an HTTP/2 request that is not a gRPC call goes on: to a direct route that speaks HTTP/2 as
 * HTTP/2 (grpc_pass, a plain HTTP/2 proxy), to one that speaks HTTP/1.1 as HTTP/1.1, and otherwise
 * (a port not asked yet, or not a direct route) to the Node gateway as HTTP/2, which asks the port
 * and serves it either way (proxy_pass would carry it as HTTP/1.1, which an h2c-only server, such
 * as Node's http2.createServer(), cannot answer).
 */
const H2_WAY_MAP = `  map "$server_protocol:$sbx_h2_route" $sbx_h2_way {
    default "";
    "HTTP/2.0:node" node;
    "HTTP/2.0:unknown" node;
    "HTTP/2.0:h2" grpc;
  }`;

/** Behind the h2c front: the client's address is the one in the PROXY line (only HAProxy reaches the sockets). */
/**
 * The per-source limit (SBX_GATEWAY_SOURCE_LIMIT) on requests in flight: each may hold an upstream
 * connection, so one client address cannot take every connection the worker has. The address is
 * the client's (from the PROXY line behind the front); loopback clients are not counted.
 */
const SOURCE_LIMIT_ZONE = `  geo $sbx_loopback { default 0; 127.0.0.0/8 1; ::1 1; }
  map $sbx_loopback $sbx_source { 1 ""; default $binary_remote_addr; }
  limit_conn_zone $sbx_source zone=sbx_sources:10m;
  limit_conn_status 429;
  limit_conn_log_level info;`;
/**
 * Slow clients: a request's headers must come within this (Slowloris), and one HTTP/2 connection
 * may carry at most this many streams at once, each of which may hold an upstream connection.
 */
const CLIENT_LIMITS = `    client_header_timeout 15s;
    http2_max_concurrent_streams 64;`;

const FRONT_SETTINGS = `  set_real_ip_from unix:;
  real_ip_header proxy_protocol;`;

/** In `location /`: a gRPC call goes to @sbx_grpc before anything else decides; other HTTP/2 by $sbx_h2_way. */
const GRPC_DIVERT = `
      error_page 419 = @sbx_grpc;
      error_page 420 = @sbx_h2_node;
      if ($sbx_grpc) { return 419; }
      if ($sbx_h2_way = grpc) { return 419; }
      if ($sbx_h2_way = node) { return 420; }`;

const GRPC_LOCATION = `    location @sbx_h2_node {
      grpc_pass grpc://sbx_node_h2;
      grpc_ignore_headers ${ACCEL_HEADERS};
      grpc_set_header Host $http_host;
      grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      grpc_set_header X-Forwarded-Host $http_host;
      grpc_set_header X-Forwarded-Proto $scheme;
      grpc_read_timeout 1d;
      grpc_send_timeout 1d;
    }
    location @sbx_grpc {
      grpc_pass grpc://$sbx_upstream_h2;
      grpc_ignore_headers ${ACCEL_HEADERS};
      grpc_set_header Host $sbx_host_header;
      grpc_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      grpc_set_header X-Forwarded-Host $http_host;
      grpc_set_header X-Forwarded-Proto $scheme;
      grpc_set_header Cookie $sbx_cookie;
      grpc_set_header X-Sbx-Traffic-Token $sbx_token_header;
      grpc_read_timeout 1d;
      grpc_send_timeout 1d;
    }
`;

/** The `listen` lines of the control server and of the main one. */
function listenLines(c: NginxConfigInput): { control: string; main: string } {
  if (c.front) {
    const h1 = `unix:${c.front.h1Socket} proxy_protocol`;
    const h2c = `unix:${c.front.h2cSocket} proxy_protocol http2`;
    return {
      control: `    listen ${h1};\n    listen ${h2c};\n    listen unix:${c.front.controlSocket};`,
      main: `    listen ${h1} default_server backlog=4096;\n    listen ${h2c} default_server backlog=4096;`,
    };
  }
  const listen = (c.listenHost.includes(':') ? `[${c.listenHost}]:${c.listenPort}` : `${c.listenHost}:${c.listenPort}`) + (c.tls ? (c.http2Directive ? ' ssl' : ' ssl http2') : '');
  return { control: `    listen ${listen};`, main: `    listen ${listen} default_server backlog=4096;` };
}

export function renderNginxConfig(c: NginxConfigInput): string {
  if (c.h2c && (!c.http2Directive || c.front || c.tls)) throw new Error('h2c on the listener needs nginx >= 1.25.1, plain HTTP and no front');
  const listen = listenLines(c);
  const http2 = !!(c.tls || c.front || c.h2c);
  // nginx >= 1.25.1: HTTP/2 by ALPN (TLS) or by the preface (h2c) is a server's setting.
  const http2On = c.http2Directive && (c.tls || c.h2c) ? '\n    http2 on;' : '';
  const seconds = Math.max(1, Math.ceil(c.upstreamTimeoutMs / 1000));
  const temp = c.tempDir ?? c.runDir;
  const hostMap = c.routes.flatMap((r) => r.hosts.map((h) => `    ${q(h)} ${upstreamName(r.name)};`)).join('\n');
  const h2RouteMap = c.routes.flatMap((r) => r.hosts.map((h) => `    ${q(h)} ${r.h2 ?? 'unknown'};`)).join('\n');
  const hostHeaderMap = c.routes
    .filter((r) => r.hostHeader)
    .flatMap((r) => r.hosts.map((h) => `    ${q(h)} ${q(r.hostHeader!)};`))
    .join('\n');
  // An old worker's last connections are cut within worker_shutdown_timeout of a reload: a removed
  // sandbox's subnet rests longer than that (core/subnet-pool.ts SUBNET_REST_MS) before another
  // sandbox gets its address, so what such a worker still routes there never reaches that one.
  // nginx builds each map's hash within map_hash_max_size (default 2048 entries): past that (a
  // thousand sandboxes with a port have two thousand hosts) it warns and builds a slower one.
  const hosts = c.routes.reduce((n, r) => n + r.hosts.length, 0);
  const mapHashMax = Math.max(2048, 2 ** Math.ceil(Math.log2(hosts * 2 || 1)));
  // A bucket holds at least one key: a pointer, the key (plus 2, aligned to 8) and the end
  // pointer (ngx_hash_init). Names of one's own may be 253 characters long.
  const longest = c.routes.reduce((n, r) => Math.max(n, ...r.hosts.map((h) => h.length)), 0);
  const mapBucket = Math.max(128, 2 ** Math.ceil(Math.log2(16 + Math.ceil((longest + 2) / 8) * 8)));
  // Where HTTP/2 arrives, each route has a second block for grpc_pass: nginx keeps idle
  // connections per block, and an HTTP/2 one that proxy_pass took up again would send HTTP/1.1 on
  // it (and the other way round): the answer would be garbage.
  const block = (name: string, address: string, keepalive: number) =>
    `  upstream ${name} {\n    server ${address} max_fails=0;\n    server unix:${c.nodeSocket} backup;\n    keepalive ${keepalive};\n    keepalive_timeout 15s;\n  }`;
  const upstreams = c.routes
    .flatMap((r) => [block(upstreamName(r.name), r.address, UPSTREAM_KEEPALIVE), ...(http2 ? [block(upstreamName(`${r.name}_h2`), r.address, H2_UPSTREAM_KEEPALIVE)] : [])])
    .join('\n');
  const h2UpstreamMap = c.routes.flatMap((r) => r.hosts.map((h) => `    ${q(h)} ${upstreamName(`${r.name}_h2`)};`)).join('\n');
  return `# Written by the sbx gateway (version ${c.version}); do not edit: it is rewritten on every change.
${c.user ? `user ${c.user};\n` : ''}worker_processes 1;
worker_shutdown_timeout ${WORKER_SHUTDOWN_S}s;
pid ${c.runDir}/nginx.pid;
error_log ${c.runDir}/nginx-error.log error;
daemon off;
events { worker_connections ${Math.min(WORKER_CONNECTIONS, (c.openFiles ?? Infinity) - 64)}; }
worker_rlimit_nofile ${Math.min(WORKER_CONNECTIONS * 2, c.openFiles ?? Infinity)};
http {
  access_log off;
  server_tokens off;
  client_body_temp_path ${temp}/nginx-body;
  proxy_temp_path ${temp}/nginx-proxy;
  fastcgi_temp_path ${temp}/nginx-fastcgi;
  uwsgi_temp_path ${temp}/nginx-uwsgi;
  scgi_temp_path ${temp}/nginx-scgi;
  client_max_body_size 0;
  map_hash_bucket_size ${mapBucket};
  map_hash_max_size ${mapHashMax};
  server_names_hash_bucket_size 128;
  geo $dollar { default "$"; }
${c.tls ? `${tlsSettings(c.tls)}\n` : ''}${http2 ? `${GRPC_MAP}\n` : ''}${c.front ? `${FRONT_SETTINGS}\n` : ''}${c.sourceLimit ? `${SOURCE_LIMIT_ZONE}\n` : ''}
  map $http_upgrade $sbx_connection { default upgrade; "" ""; }
  map $host $sbx_upstream {
    default sbx_node;
${hostMap}
  }
  map $host $sbx_host_header {
    default $http_host;
${hostHeaderMap}
  }${http2 ? `
  map $host $sbx_h2_route {
    default node;
${h2RouteMap}
  }
${H2_WAY_MAP}` : ''}
${cookieMaps()}

  upstream sbx_node {
    server unix:${c.nodeSocket};
    keepalive 64;
  }${http2 ? `
  upstream sbx_node_h2 {
    server unix:${c.nodeSocket};
    keepalive 64;
  }
  map $host $sbx_upstream_h2 {
    default sbx_node_h2;
${h2UpstreamMap}
  }` : ''}
${upstreams}

  # Only for the Node gateway: which configuration the workers serve (to await a reload).
  server {
${listen.control}${http2On}
    server_name ${CONTROL_HOST};
    location = /_sbx/config-version { return 200 "${c.version}${c.instance ? ` ${c.instance}` : ''}"; }
  }

  server {
${listen.main}${http2On}
    keepalive_requests 1000000;
    keepalive_timeout 65s;
${CLIENT_LIMITS}${c.sourceLimit ? `\n    limit_conn sbx_sources ${c.sourceLimit};` : ''}

    location / {
      # Everything that is not a direct route goes to the Node gateway, which keeps its own
      # timeouts (it may first wake or start the sandbox, which must not count against nginx's).
      error_page 418 = @sbx_node;${http2 ? GRPC_DIVERT : ''}
      if ($sbx_upstream = sbx_node) { return 418; }
      proxy_pass http://$sbx_upstream;
${PROXIED}
      proxy_set_header Host $sbx_host_header;
      proxy_set_header Cookie $sbx_cookie;
      proxy_set_header X-Sbx-Traffic-Token $sbx_token_header;
      proxy_next_upstream error;
      proxy_connect_timeout 2s;
      proxy_read_timeout ${seconds}s;
      proxy_send_timeout ${seconds}s;
      error_page 504 = @sbx_timeout;
    }

${http2 ? GRPC_LOCATION : ''}    location @sbx_node {
      proxy_pass http://sbx_node;
${PROXIED}
      proxy_set_header Host $http_host;
      proxy_read_timeout 1d;
      proxy_send_timeout 1d;
    }

    # The sandbox took too long: the Node gateway words the answer (JSON, HTML or text).
    location @sbx_timeout {
      proxy_pass http://sbx_node;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Sbx-Gateway-Error upstream_timeout;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }
  }
}
`;
}
