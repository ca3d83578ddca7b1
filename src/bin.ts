// The executable's entry: enable Node's compile cache (fast second start), run, exit.
// Built as one CommonJS file: Node loads built-ins for CommonJS far faster than for ESM, and
// esbuild keeps every dynamic import() lazy inside the bundle.
import module from 'node:module';
module.enableCompileCache?.();
import('./cli/main.ts')
  .then(({ main }) => main())
  .then((code) => (process.exitCode = code));
