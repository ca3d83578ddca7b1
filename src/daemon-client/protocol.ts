// The control protocol between sbx clients (CLI, library) and the sbx daemon (the gateway on the
// host, or the agent container on the engine's host): JSON lines over one stream. The client
// sends `{"v", "op", "payload"}`, may later send the line `abort` (Ctrl-C), and gets one answer
// line once the work, or its rollback, is done. `tunnel` turns the stream into a byte pipe to the
// daemon's HTTP listener after its answer line, and `netlog` with `follow` sends a sandbox's new
// network-log entries after it, one JSON line each. A daemon refuses another protocol version with
// `mismatch`, so a client never hands its work to a daemon that would misread it.

/** Bumped on every change that an older daemon or client would misread. */
export const PROTOCOL_VERSION = 5;

export type Operation = 'hello' | 'call' | 'tunnel' | 'create' | 'remove' | 'expose' | 'unexpose' | 'network' | 'reload' | 'health' | 'netlog';

/** Library methods a client may call in the daemon (`call`); their arguments and results are JSON. */
export const REMOTE_METHODS = [
  'create',
  'list',
  'get',
  'resolve',
  'start',
  'stop',
  'pause',
  'resume',
  'remove',
  'exposePorts',
  'listPorts',
  'unexposePorts',
  'token',
  'getNetwork',
  'updateNetwork',
  'blockNetwork',
  'unblockNetwork',
  'gatewayAddress',
  'gatewayStatus',
  'execTarget',
  'sandboxNames',
  'setPool',
  'poolStatus',
  'checkNetwork',
  'ca',
] as const;
export type RemoteMethod = (typeof REMOTE_METHODS)[number];

export interface ControlRequest {
  v?: number;
  op: Operation;
  payload?: Record<string, unknown>;
}

export interface ControlAnswer {
  value?: unknown;
  error?: { message: string; exitCode: number; warnings?: string[]; mismatch?: { daemon: number; client?: number } };
}

/** What `hello` answers: who the daemon is. */
export interface DaemonHello {
  protocol: number;
  version: string;
  /** The agent's build id (src/api/agent-build.ts) and settings fingerprint: a client whose own differ replaces it. */
  build?: string;
  config?: string;
  pid: number;
  /**
   * Where the daemon's gateway listens, in its own network namespace; `tls` when it serves HTTPS,
   * with the certificate (never the key) of the sbx CA it chains to, for clients that check it.
   */
  gateway?: { host: string; port: number; domain: string; tls?: { caPem?: string } };
}

/** The longest control line accepted: a request is small; a line without end is an attack. */
export const MAX_LINE_BYTES = 1024 * 1024;

/**
 * Splits a stream of text into lines; returns a function that stops listening (bytes after the
 * last line are handed back). A line over MAX_LINE_BYTES destroys the stream.
 */
export function onLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): () => void {
  let buffered = '';
  const onData = (chunk: Buffer | string) => {
    const text = typeof chunk === 'string' ? chunk : chunk.toString('latin1');
    // Only the new bytes can hold the line's end: no search of the whole buffer per chunk.
    let nl = text.indexOf('\n');
    if (nl < 0) {
      buffered += text;
      if (buffered.length > MAX_LINE_BYTES) (stream as NodeJS.ReadableStream & { destroy(): void }).destroy();
      return;
    }
    buffered += text;
    nl = buffered.length - text.length + nl;
    while (nl >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      try {
        onLine(Buffer.from(line, 'latin1').toString('utf8'));
      } catch {
        // A handler that throws ends this connection, never its process.
        (stream as NodeJS.ReadableStream & { destroy(): void }).destroy();
        return;
      }
      nl = buffered.indexOf('\n');
    }
    if (buffered.length > MAX_LINE_BYTES) (stream as NodeJS.ReadableStream & { destroy(): void }).destroy();
  };
  stream.on('data', onData);
  return () => {
    stream.off('data', onData);
    // Whoever reads next (a pipe) gets the bytes that came after the last line.
    (stream as NodeJS.ReadableStream).pause();
    const rest = buffered;
    buffered = '';
    if (rest) (stream as NodeJS.ReadableStream & { unshift(b: Buffer): void }).unshift(Buffer.from(rest, 'latin1'));
  };
}

/** Whether a home's gateway (or agent) runs, and where: `sbx gateway status`. */
export interface GatewayStatus {
  running: boolean;
  pid?: number;
  host?: string;
  port?: number;
  domain?: string;
  url?: string;
  startedAt?: string;
  engine?: string;
  /** Present (true) when it serves HTTPS (SBX_GATEWAY_TLS=1). */
  tls?: boolean;
  /** Its port takes HTTP/2 with prior knowledge (h2c) beside HTTP/1.1. */
  h2c?: boolean;
  /** With h2c: who tells it from HTTP/1.1 on the port: "nginx" (1.25.1+, alone), "haproxy" (before an older nginx) or "node" (the Node engine). */
  h2cBy?: 'nginx' | 'haproxy' | 'node';
  /** The resolver behind sbx's DNS forwarder. */
  dnsUpstream?: string;
  /** The user the DNS forwarder and the egress proxy run as. */
  egressUser?: string;
  /** What `sbx network log` gets: "kernel, dns, proxy", or less and why ("dns, proxy (no kernel entries: ...)", "off (SBX_NETWORK_LOG=0)"). */
  networkLog?: string;
  log: string;
  /** Agent mode: the agent container that runs it. */
  agent?: string;
}

/**
 * libuv's thread pool in the daemon (UV_THREADPOOL_SIZE): the network log's nflog reader keeps one
 * of its threads waiting on the kernel, beside libnftables runs and file reads (Node's default is 4).
 */
export const GATEWAY_THREADPOOL = '8';
