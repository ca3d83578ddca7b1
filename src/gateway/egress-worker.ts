// The egress worker's side: sbx's DNS forwarder and Host/SNI proxy, the code that parses what
// sandboxes send, in a process of its own (see egress-worker-main.ts). They decide exactly as
// they would in the gateway (same modules, same judge); what needs root or the engine is asked of
// the gateway over the channel (egress-ipc.ts):
// - a sandbox's policy: pushed by the gateway as judged (a pending update included), asked for
//   when a sandbox shows up before its first push;
// - which sandbox an address belongs to: the subnets come from the gateway (Docker), re-read on
//   the same schedule as before (sandbox-sources.ts);
// - learning a DNS answer into the kernel, and conntrack's original destinations: the gateway's.
import { bindLowPort, preferredLowPorts } from './low-ports.ts';
import { compilePolicy, type CompiledPolicy, type NetworkPolicy } from '../core/network-policy.ts';
import type { EgressListeners } from '../net/nft-rules.ts';
import { DnsForwarder } from './dns-forwarder.ts';
import { EgressProxy } from './egress-proxy.ts';
import { Peer, type Endpoint, type GatewayAsks, type WorkerAsks, type WorkerConfig } from './egress-ipc.ts';
import { HostAddresses } from './host-addresses.ts';
import { SandboxSources } from './sandbox-sources.ts';
import { UpstreamResolver } from './upstream.ts';
import { RateGate, type NetworkLogEntry, type NetworkLogSource } from '../core/network-log.ts';

/** The worker's log entries go to the gateway in batches, at most this often. */
const EVENTS_EVERY_MS = 100;

export interface EgressWorkerSide {
  listeners: EgressListeners;
  close(): void;
}

export async function runEgressWorker(endpoint: Endpoint, config: WorkerConfig, log: (line: string) => void): Promise<EgressWorkerSide> {
  const policies = new Map<string, { json: string; compiled: CompiledPolicy }>();
  /** Bumped by every push: an answer to an older question must not undo a newer push. */
  let pushes = 0;
  const setPolicy = (id: string, policy: NetworkPolicy) => {
    const json = JSON.stringify(policy);
    if (policies.get(id)?.json !== json) policies.set(id, { json, compiled: compilePolicy(policy) });
  };
  let proxy: EgressProxy | undefined;
  let sources: SandboxSources | undefined;

  const peer = new Peer<WorkerAsks, GatewayAsks>(endpoint, {
    update: async (raw) => {
      const a = (raw ?? {}) as GatewayAsks['update']['args'];
      pushes++;
      for (const [id, policy] of Object.entries(a.set ?? {})) setPolicy(id, policy);
      for (const id of a.drop ?? []) policies.delete(id);
      if (a.invalidate) sources?.invalidate();
      return { cut: a.recheck ? (proxy?.recheck() ?? 0) : 0 };
    },
  });

  sources = new SandboxSources({ listSandboxNetworks: async () => new Map(await peer.ask('networks', {}, 10_000)) }, config.home);
  const known = sources;
  /** The sandbox an address belongs to, with its policy known before it is judged. */
  const sandboxOf = async (address: string): Promise<string | undefined> => {
    const id = await known.find(address);
    for (let tries = 0; id && !policies.has(id) && tries < 3; tries++) {
      const before = pushes;
      const policy = await peer.ask('policy', { id }, 10_000);
      if (!policy) break;
      if (pushes === before) setPolicy(id, policy);
    }
    return id;
  };
  const policyOf = (id: string) => policies.get(id)?.compiled;
  // Decisions for the network log: rate-limited per sandbox (a flood in one costs the others
  // nothing), sent in batches, never awaited.
  const gate = new RateGate();
  let batch: Array<{ id: string; entry: NetworkLogEntry }> = [];
  const flush = () => {
    const events = batch;
    batch = [];
    if (events.length) peer.note({ kind: 'events', events });
  };
  const flusher = setInterval(flush, EVENTS_EVERY_MS);
  flusher.unref();
  let soon = false;
  const recorder = (source: NetworkLogSource) => (id: string, make: () => Omit<NetworkLogEntry, 'time' | 'source'>) => {
    if (!gate.take(id)) return;
    const entry = make();
    batch.push({ id, entry: { time: new Date().toISOString(), source, ...entry } });
    // A DNS answer goes at once: the kernel's entries for the connections it leads to name it.
    if (entry.answers?.length && !soon) {
      soon = true;
      setImmediate(() => {
        soon = false;
        flush();
      });
    }
  };
  const recording = (source: NetworkLogSource) => (config.log !== false ? { record: recorder(source) } : {});
  const hostAddresses = new HostAddresses();
  const isHost = (a: string) => hostAddresses.has(a);
  const isSandbox = async (a: string) => hostAddresses.onSandboxBridge(a) || (await known.owner(a)) !== undefined;

  const dns = new DnsForwarder({
    upstream: config.upstream,
    sandboxOf,
    policyOf,
    learn: (id, name, answers) => peer.ask('learn', { id, name, answers }),
    isHost,
    isSandbox,
    log,
    ...recording('dns'),
  });
  proxy = new EgressProxy({
    sandboxOf,
    policyOf,
    resolver: new UpstreamResolver(config.upstream),
    isHost,
    isSandbox,
    log,
    ...recording('proxy'),
    destination: async (client, clientPort, localPort) => (await peer.ask('conntrack', { client, clientPort, localPort }, 10_000)) ?? undefined,
  });
  // As root (before the drop), on ports below 1024: see low-ports.ts.
  const privileged = !!config.drop;
  const prefer = preferredLowPorts(config.home);
  const listeners = { dns: await bindLowPort((port) => dns.listen(port), privileged, prefer.dns), ...(await proxy.listen(privileged, prefer)) };
  const running = proxy;
  return {
    listeners,
    close() {
      clearInterval(flusher);
      peer.close();
      dns.close();
      running.close();
    },
  };
}
