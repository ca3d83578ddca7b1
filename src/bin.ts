// The executable's entry: run, exit. Node's compile cache is bin/sbx's to set (NODE_COMPILE_CACHE,
// in a directory of the user's own; Node's default is under the shared temp directory).
// Built as one CommonJS file: Node loads built-ins for CommonJS far faster than for ESM, and
// esbuild keeps every dynamic import() lazy inside the bundle.
import('./cli/main.ts')
  .then(({ main }) => main())
  .then((code) => (process.exitCode = code));
