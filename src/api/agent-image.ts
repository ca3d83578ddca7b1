// The image of sbx's agent (the privileged daemon beside each Docker engine), built without any
// registry in two layers: a root image made by debootstrap (`sbx image build`, slow, rarely) and on
// top of it this machine's Node binary and dist bundles, through the engine's classic builder
// (seconds). The top image's tag carries a build id, so a new build of sbx gets a new agent image.
import { createReadStream, readFileSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tarStream from 'tar-stream';
import { RuntimeError } from '../core/errors.ts';
import { GATEWAY_USER } from '../net/gateway-account.ts';
import { describeEngine } from '../runtime/errors.ts';
import type { Runtime } from '../runtime/docker.ts';
import { BUILT_NGINX_BIN, BUILT_NGINX_DIR } from '../core/built-nginx.ts';
import { bootstrapImage } from './image.ts';
import { agentBundle, AGENT_FILES, type AgentBundle } from './agent-build.ts';
export { agentBuildId, AGENT_FILES } from './agent-build.ts';

/**
 * Its tag names what is in it: a new one whenever AGENT_PACKAGES change, so that setup (which
 * builds only missing images) and `sbx image build` make it again. 2: HAProxy (the h2c front).
 */
export const AGENT_ROOT_IMAGE = 'sbx/agent-root:bookworm-2';

/**
 * What the daemon runs besides Node: nft (egress rules), conntrack (inspecting tracked
 * connections), nginx (the gateway's fast path when the image carries no nginx 1.26, see packContext,
 * and the libraries that one links), HAProxy (its h2c front before that older nginx), nsenter (relays into sandboxes' namespaces) and
 * setpriv (nginx's parent-death signal) from util-linux, ip/ss (iproute2), ps/pgrep (procps); and
 * libstdc++6, which the copied Node binary links against.
 */
export const AGENT_PACKAGES = ['nftables', 'conntrack', 'nginx-light', 'haproxy', 'util-linux', 'iproute2', 'procps', 'ca-certificates', 'libstdc++6'];

/** The bundles the agent runs, copied from dist/ into /opt/sbx. */

export interface AgentImageOptions {
  onProgress?: (line: string) => void;
}

/**
 * debootstrap of bookworm with AGENT_PACKAGES and the system user sbx-gateway (its own group, as
 * scripts/setup makes it on a host: the egress worker runs as it with `nogroup`, the nginx workers
 * with its group, and the kernel rules tell the two apart), imported as AGENT_ROOT_IMAGE.
 */
export async function buildAgentRootImage(runtime: Runtime, options: AgentImageOptions & { mirror?: string } = {}): Promise<void> {
  await bootstrapImage(runtime, {
    ...options,
    tag: AGENT_ROOT_IMAGE,
    packages: AGENT_PACKAGES,
    changes: ['ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'ENV LANG=C.UTF-8', 'LABEL sbx.image=agent-root'],
    prepare: async (root) => {
      options.onProgress?.(`adding the system user ${GATEWAY_USER}`);
      const { execa } = await import('execa');
      await execa('chroot', [root, 'useradd', '--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', GATEWAY_USER]);
    },
  });
}

export function agentImageTag(build: string): string {
  return `sbx/agent:${build}`;
}

/**
 * The agent image for this build of sbx, built on the engine when it lacks it: its tag. One
 * image inspect when it is there; otherwise a build of a few seconds on top of AGENT_ROOT_IMAGE
 * (which only `sbx image build` makes, on the engine's host).
 */
export async function ensureAgentImage(runtime: Runtime, options: AgentImageOptions & { force?: boolean; rootImage?: string; distDir?: string } = {}): Promise<string> {
  const bundle = agentBundle(options.distDir);
  const tag = agentImageTag(bundle.build);
  if (!options.force && (await runtime.imageExists(tag))) return tag;
  const root = options.rootImage ?? AGENT_ROOT_IMAGE;
  if (!(await runtime.imageExists(root))) {
    throw new RuntimeError(
      `the Docker engine at ${describeEngine()} has no agent base image ${root}: run \`sbx image build\` on the engine's host (needs root and debootstrap), ` +
        `or build it elsewhere and load it there: docker save ${root} | docker -H ${describeEngine()} load`,
    );
  }
  if (process.platform !== 'linux') throw new RuntimeError(`the agent image copies this machine's Node binary, which is for ${process.platform}, not Linux`);
  options.onProgress?.(`building ${tag} on ${root}`);
  const labels = { 'sbx.image': 'agent', 'sbx.version': bundle.version, 'sbx.build': bundle.build };
  const context = tarStream.pack();
  const packing = packContext(context, root, bundle).catch((err: Error) => context.destroy(err));
  try {
    await runtime.buildImage(context, tag, labels, (line) => /^(Step \d|Successfully built)/.test(line) && options.onProgress?.(line));
  } catch (err) {
    context.destroy();
    throw err;
  }
  await packing;
  return tag;
}

/** uid and gid of sbx-gateway in the agent (see packContext). */
export const AGENT_GATEWAY_ID = 2147480001;

/** The build context: a Dockerfile, the running Node binary, the bundles and the built nginx. */
async function packContext(pack: tarStream.Pack, root: string, bundle: AgentBundle): Promise<void> {
  const dockerfile = [
    `FROM ${root}`,
    // The agent's sbx-gateway gets an id no host account has: the kernel rules that let it (with
    // its group) into sandboxes name numbers, and they hold in the host's namespace, where the
    // next free system id (999) is often someone else (systemd-coredump, database images).
    `RUN groupmod -g ${AGENT_GATEWAY_ID} ${GATEWAY_USER} && usermod -u ${AGENT_GATEWAY_ID} -g ${AGENT_GATEWAY_ID} ${GATEWAY_USER}`,
    'COPY node /usr/local/bin/node',
    `COPY ${AGENT_FILES.join(' ')} /opt/sbx/`,
    // koffi, found by the bundles' require beside them: the agent runs nft through libnftables and
    // reads the network log's kernel entries (nflog) in its process.
    ...(bundle.modules.length ? ['COPY node_modules /opt/sbx/node_modules'] : []),
    // nginx 1.26 where the agent's gateway looks for it first (findNginx): h2c on its port without
    // HAProxy. Its libraries (OpenSSL 3, PCRE2, zlib) are in the root image through nginx-light.
    ...(bundle.nginx.length ? [`COPY nginx ${BUILT_NGINX_DIR}`] : []),
    'ENTRYPOINT ["/usr/local/bin/node", "/opt/sbx/cli.cjs"]',
    'CMD ["agent", "run"]',
    '',
  ].join('\n');
  const put = (header: tarStream.Headers, bytes?: Buffer) =>
    new Promise<void>((resolve, reject) => pack.entry(header, bytes, (err) => (err ? reject(err) : resolve())));
  const add = (name: string, bytes: Buffer, mode = 0o644) => put({ name, mode }, bytes);
  await add('Dockerfile', Buffer.from(dockerfile));
  for (const f of bundle.files) await add(f.name, f.bytes);
  for (const f of bundle.modules) await add(f.name, readFileSync(f.path));
  if (bundle.nginx.length) {
    // Its directories as entries of their own, so that their mode (root's 0755, which findNginx
    // requires up to /) does not depend on the engine's umask.
    for (const dir of ['nginx/', 'nginx/sbin/']) await put({ name: dir, type: 'directory', mode: 0o755 });
  }
  for (const f of bundle.nginx) {
    const bytes = f.bytes ?? readFileSync(f.path);
    // Rebuilt by setup since the build id was made: the image would not be what its tag names.
    if (bytes.length !== f.size) throw new RuntimeError(`${f.path} changed while the agent image was built (scripts/setup?): run the command again`);
    await add(f.name, bytes, f.name.endsWith(BUILT_NGINX_BIN) ? 0o755 : 0o644);
  }
  const node = realpathSync(process.execPath);
  const entry = pack.entry({ name: 'node', mode: 0o755, size: statSync(node).size });
  await pipeline(createReadStream(node), entry);
  pack.finalize();
}
