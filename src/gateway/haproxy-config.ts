// The h2c front's configuration (pure). nginx 1.22 cannot serve HTTP/1.1 and HTTP/2 with prior
// knowledge (h2c) on one plaintext port, so HAProxy owns the gateway port and hands each
// connection, untouched (TCP mode: it parses no HTTP), to one of two nginx listeners by its first
// bytes: HTTP/2's 24-byte connection preface goes to the `http2` one, the rest to the HTTP/1.1
// one. A PROXY protocol line in front carries the client's address (nginx reads it with realip).

/** HTTP/2's connection preface (RFC 9113, 3.4), in hex as HAProxy's `-m bin` takes it. */
export const H2_PREFACE_HEX = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1').toString('hex');

export interface H2cFrontInput {
  listenHost: string;
  listenPort: number;
  /** nginx's HTTP/1.1 listener (unix socket, PROXY protocol). */
  h1Socket: string;
  /** nginx's HTTP/2 listener (unix socket, PROXY protocol). */
  h2cSocket: string;
  /** Connections at once; each takes two descriptors. */
  maxconn: number;
  /** Run as this user and group after binding (when started as root). */
  user?: { name: string; group: string };
  /** How long a connection may take to send enough to be told apart (ms). */
  inspectMs?: number;
}

/** The bind address, IPv6 in HAProxy's `ipv6@` form. */
function bindAddress(host: string, port: number): string {
  // v6only: as nginx's `listen [::]`, an IPv6 address takes IPv6 only.
  return host.includes(':') ? `ipv6@${host}:${port} v6only` : `ipv4@${host}:${port}`;
}

/** HAProxy paths are unquoted words: refuse anything that could end one. */
function word(value: string, what: string): string {
  if (!/^[A-Za-z0-9_./@:-]+$/.test(value)) throw new Error(`${what} "${value}" cannot go into the h2c front's configuration`);
  return value;
}

export function renderH2cFrontConfig(c: H2cFrontInput): string {
  const inspect = c.inspectMs ?? 2000;
  return `# Written by the sbx gateway; do not edit: it is rewritten at every start.
global
  maxconn ${c.maxconn}
  # No SO_REUSEPORT: a second gateway on this port must fail to bind, not share its connections.
  noreuseport
${c.user ? `  user ${word(c.user.name, 'user')}\n  group ${word(c.user.group, 'group')}\n` : ''}
defaults
  mode tcp
  timeout connect 5s
  # Idle limits are nginx's (and the Node gateway's) to keep: a WebSocket may idle for long.
  timeout client 1d
  timeout server 1d
  timeout client-fin 30s
  timeout server-fin 30s

frontend sbx_gateway
  bind ${bindAddress(word(c.listenHost, 'address'), c.listenPort)} backlog 4096
  maxconn ${c.maxconn}
  # A connection is passed on once it has sent 24 bytes, or a whole HTTP/1.x request (one shorter
  # than the preface must not wait for more) that is not the preface's first part ("PRI * HTTP/2.0"
  # then a blank line parses as one); it waits at most ${inspect} ms.
  tcp-request inspect-delay ${inspect}ms
  tcp-request content accept if { req.len ge 24 } || HTTP !{ req.payload(0,4) -m bin 50524920 }
  use_backend sbx_h2c if { req.payload(0,24) -m bin ${H2_PREFACE_HEX} }
  default_backend sbx_h1

backend sbx_h1
  server nginx ${word(c.h1Socket, 'socket')} send-proxy

backend sbx_h2c
  server nginx ${word(c.h2cSocket, 'socket')} send-proxy
`;
}
