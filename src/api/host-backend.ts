// Host mode: sbx runs as root next to a local engine and does the privileged work in this
// process or its daemon on the same host (LocalSbx). What LocalSbx reads from the store is the
// store's shared, frozen snapshot: a library user gets copies of their own to change, as through
// the daemon or the agent (list and get make theirs).
import type { SbxBackend } from './backend.ts';
import type { LocalSbx } from './local-sbx.ts';

export function hostBackend(local: LocalSbx): SbxBackend {
  return {
    kind: 'host',
    runtime: () => local.runtime(),
    create: (o) => local.create(o),
    list: () => local.list(),
    get: (ref, o) => local.get(ref, o),
    resolve: async (ref) => structuredClone(local.resolve(ref)),
    sandboxNames: async () => local.sandboxNames(),
    execTarget: (ref) => local.execTarget(ref),
    start: (ref) => local.start(ref),
    stop: (ref) => local.stop(ref),
    pause: (ref) => local.pause(ref),
    resume: (ref) => local.resume(ref),
    remove: (ref, o) => local.remove(ref, o),
    exposePorts: (ref, ports, o) => local.exposePorts(ref, ports, o),
    listPorts: async (ref) => local.listPorts(ref),
    unexposePorts: (ref, ports) => local.unexposePorts(ref, ports),
    token: (ref, o) => local.token(ref, o),
    getNetwork: async (ref) => structuredClone(local.getNetwork(ref)),
    updateNetwork: (ref, input) => local.updateNetwork(ref, input),
    gatewayAddress: async () => local.gatewayAddress(),
    gatewayStatus: () => local.gatewayStatus(),
    ensureGateway: async () => {
      const s = await local.ensureGateway();
      return { host: s.host === '0.0.0.0' ? '127.0.0.1' : s.host === '::' ? '::1' : s.host, port: s.port, domain: s.domain, ...(s.tls ? { tls: { ...(s.tlsCa ? { ca: s.tlsCa } : {}) } } : {}) };
    },
    stopGateway: () => local.stopGateway(),
    networkLog: (ref, q) => local.networkLog(ref, q),
    followNetworkLog: (ref, q, signal) => local.followNetworkLog(ref, q, signal),
    checkNetwork: (ref, dest, o) => local.checkNetwork(ref, dest, o),
    setPool: (size) => local.setPool(size),
    poolStatus: async () => structuredClone(local.poolStatus()),
    ca: async () => {
      const { pem: _pem, ...info } = await local.ca();
      return info;
    },
  };
}
