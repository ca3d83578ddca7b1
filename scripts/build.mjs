// Builds dist/: a bundled, minified CLI (split so each command loads only what it needs), the
// library entry, type declarations, and the shell completions (dist/completions; the copies in
// completions/ are refreshed with `npm run completions` and a test fails when they drift).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const updateCommitted = process.argv.includes('--completions');

// dockerode's BuildKit session (gRPC, protobuf) and SSH transport are never used by sbx;
// leaving them out of the bundle halves start-up time.
const unused = ['@grpc/grpc-js', '@grpc/proto-loader', 'protobufjs', 'ssh2', 'cpu-features'];
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

rmSync('dist', { recursive: true, force: true });
await build({
  entryPoints: { cli: 'src/bin.ts', index: 'src/index.ts' },
  outdir: 'dist',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node22',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  chunkNames: 'chunks/[name]-[hash]',
  define: { SBX_VERSION: JSON.stringify(pkg.version) },
  // CommonJS dependencies call require() for Node built-ins; ESM bundles need one.
  banner: { js: "import { createRequire as __sbxRequire } from 'node:module'; const require = __sbxRequire(import.meta.url);" },
  plugins: [stubUnused],
  logLevel: 'warning',
});

execFileSync(process.execPath, [new URL('../node_modules/typescript/bin/tsc', import.meta.url).pathname, '-p', 'tsconfig.json', '--declaration', '--emitDeclarationOnly'], { stdio: 'inherit' });

mkdirSync('dist/completions', { recursive: true });
for (const [shell, file] of [['bash', 'sbx.bash'], ['zsh', '_sbx'], ['fish', 'sbx.fish']]) {
  const text = execFileSync(process.execPath, ['dist/cli.js', 'completion', shell], { encoding: 'utf8' });
  writeFileSync(`dist/completions/${file}`, text);
  if (updateCommitted) writeFileSync(`completions/${file}`, text);
}
