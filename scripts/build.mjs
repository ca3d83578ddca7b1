// Builds dist/: a bundled, minified CLI (each command's code evaluated only when it runs), the
// library entry, type declarations, and the shell completions (dist/completions; the copies in
// completions/ are refreshed with `npm run completions` and a test fails when they drift).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const updateCommitted = process.argv.includes('--completions');

// Never used by sbx, so left out of the bundle (they cost most of the start-up time):
// dockerode's BuildKit session (gRPC, protobuf), SSH transport (ssh:// engines are dialled with
// the system ssh instead: src/runtime/ssh-dial.ts) and build-context packing (sbx imports images
// from a stream instead).
const unused = ['@grpc/grpc-js', '@grpc/proto-loader', 'protobufjs', 'ssh2', 'cpu-features', 'tar-fs', '@balena/dockerignore'];
const stubUnused = {
  name: 'stub-unused',
  setup(b) {
    const filter = new RegExp(`^(${unused.map((m) => m.replace(/[/.]/g, '\\$&')).join('|')})(/.*)?$`);
    b.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'stub' }));
    b.onLoad({ filter: /.*/, namespace: 'stub' }, (args) => ({
      contents: `const fail = () => { throw new Error(${JSON.stringify(`${'${'}args.path} is not bundled with sbx`)}); };
        module.exports = new Proxy({}, { get: (_, k) => k === '__esModule' ? false : fail });`,
      loader: 'js',
    }));
  },
};

// Modules whose load-time work sbx never needs, replaced by what sbx relies on of them:
// graceful-fs under proper-lockfile (it patches all of fs at load to retry EMFILE; the lock needs
// four plain fs calls), and the debug logger of docker-modem (silent unless DEBUG is set).
const replaced = {
  'graceful-fs': 'module.exports = require("node:fs");',
  debug: 'module.exports = () => Object.assign(() => {}, { enabled: false, extend() { return module.exports(); } });',
};
const replace = {
  name: 'replace',
  setup(b) {
    b.onResolve({ filter: /^(graceful-fs|debug)$/ }, (args) => ({ path: args.path, namespace: 'replaced' }));
    b.onLoad({ filter: /.*/, namespace: 'replaced' }, (args) => ({ contents: replaced[args.path], loader: 'js' }));
  },
};

// Heavy Node built-ins that some dependencies load at start-up but use only on rare paths
// (commander: child_process for external subcommands; docker-modem: https/tls for remote
// engines; dockerode: zlib and crypto for builds and sessions). They are loaded on first use
// instead. Only for importers that use a default import
// or require(), where a lazy object is a faithful stand-in.
const lazyBuiltins = { commander: ['child_process'], 'docker-modem': ['https'], dockerode: ['zlib', 'crypto'] };
const lazyBuiltin = {
  name: 'lazy-builtin',
  setup(b) {
    b.onResolve({ filter: /^(node:)?(child_process|https|zlib|crypto)$/ }, (args) => {
      const name = args.path.replace(/^node:/, '');
      const owner = Object.keys(lazyBuiltins).find((pkg) => args.importer.includes(`/node_modules/${pkg}/`));
      if (!owner || !lazyBuiltins[owner].includes(name)) return undefined;
      return { path: name, namespace: 'lazy-builtin' };
    });
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => ({
      contents: `let m; const load = () => (m ??= require('node:${args.path}'));
        module.exports = new Proxy({}, { get: (_, k) => load()[k], has: (_, k) => k in load() });`,
      loader: 'js',
    }));
  },
};

rmSync('dist', { recursive: true, force: true });
const common = {
  bundle: true,
  platform: 'node',
  target: 'node22',
  minify: !process.env.SBX_NO_MINIFY,
  legalComments: 'none',
  define: { SBX_VERSION: JSON.stringify(pkg.version) },
  plugins: [stubUnused, replace, lazyBuiltin],
  logLevel: 'warning',
};
// The CLI: one CommonJS file (built-ins load much faster for CommonJS than for ESM). Prompts and
// tables are only for people at a terminal: they stay in node_modules, loaded when used, so
// every run does not compile them. So do node-forge (sbx's CA: a third of the bundle otherwise)
// and execa (image builds), which sbx imports with import() where it needs them.
const cjs = {
  ...common,
  format: 'cjs',
  define: { ...common.define, 'import.meta.url': '__sbxModuleUrl' },
  banner: { js: "const __sbxModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
};
// Checked before any dependency loads: on an older Node they fail at load with errors that name
// nothing useful (execa: "nm.union is not a function").
const nodeCheck = `if (+process.versions.node.split('.')[0] < 22) { process.stderr.write('error: sbx needs Node >= 22, this is ' + process.version + ' (' + process.execPath + '): run scripts/setup, which provisions it in .tools/, or put a newer node first on PATH\\n'); process.exit(1); }`;
await build({ ...cjs, banner: { js: `${nodeCheck}\n${cjs.banner.js}` }, entryPoints: ['src/bin.ts'], outfile: 'dist/cli.cjs', external: ['@inquirer/prompts', 'cli-table3', 'node-forge', 'execa'] });
// The relay that the gateway starts inside sandboxes' network namespaces (no dependencies).
await build({ ...cjs, entryPoints: ['src/gateway/relay-main.ts'], outfile: 'dist/relay.cjs' });
// The egress worker: the DNS forwarder and the Host/SNI proxy, as an unprivileged user.
await build({ ...cjs, entryPoints: ['src/gateway/egress-worker-main.ts'], outfile: 'dist/egress-worker.cjs' });
// The library: ESM for `import { Sbx } from 'sbx'`.
await build({
  ...common,
  entryPoints: ['src/index.ts'],
  outfile: 'dist/index.js',
  format: 'esm',
  // CommonJS dependencies call require() for Node built-ins; ESM bundles need one.
  banner: { js: "import { createRequire as __sbxRequire } from 'node:module'; const require = __sbxRequire(import.meta.url);" },
});

execFileSync(process.execPath, [new URL('../node_modules/typescript/bin/tsc', import.meta.url).pathname, '-p', 'tsconfig.json', '--declaration', '--emitDeclarationOnly'], { stdio: 'inherit' });

mkdirSync('dist/completions', { recursive: true });
for (const [shell, file] of [['bash', 'sbx.bash'], ['zsh', '_sbx'], ['fish', 'sbx.fish']]) {
  const text = execFileSync(process.execPath, ['dist/cli.cjs', 'completion', shell], { encoding: 'utf8' });
  writeFileSync(`dist/completions/${file}`, text);
  if (updateCommitted) writeFileSync(`completions/${file}`, text);
}
