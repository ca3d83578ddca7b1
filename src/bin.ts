// The executable's entry: enable Node's compile cache (fast second start), run, exit.
import module from 'node:module';
module.enableCompileCache?.();
const { main } = await import('./cli/main.ts');
process.exitCode = await main();
