// The control protocol between sbx clients (CLI, library) and the sbx daemon (the gateway on the
// host, or the agent container on the engine's host): JSON lines over one stream. The client
// sends `{"v", "op", "payload"}`, may later send the line `abort` (Ctrl-C), and gets one answer
// line once the work, or its rollback, is done. `tunnel` turns the stream into a byte pipe to the
// daemon's HTTP listener after its answer line. A daemon refuses another protocol version with
// `mismatch`, so a client never hands its work to a daemon that would misread it.

/** Bumped on every change that an older daemon or client would misread. */
export const PROTOCOL_VERSION = 2;

export type Operation = 'hello' | 'call' | 'tunnel' | 'create' | 'remove' | 'expose' | 'unexpose' | 'network' | 'reload' | 'health';

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
  /** Where the daemon's gateway listens, in its own network namespace. */
  gateway?: { host: string; port: number; domain: string };
}

/** Splits a stream of text into lines; returns a function that stops listening (bytes after the last line are handed back). */
export function onLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): () => void {
  let buffered = '';
  const onData = (chunk: Buffer | string) => {
    buffered += typeof chunk === 'string' ? chunk : chunk.toString('latin1');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      onLine(Buffer.from(line, 'latin1').toString('utf8'));
    }
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
  /** The resolver behind sbx's DNS forwarder. */
  dnsUpstream?: string;
  /** The user the DNS forwarder and the egress proxy run as. */
  egressUser?: string;
  log: string;
  /** Agent mode: the agent container that runs it. */
  agent?: string;
}
