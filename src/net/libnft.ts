// nftables' own library (libnftables, from the nftables package) called in this process through
// koffi, instead of an `nft -f -` process per script. A script is one transaction either way;
// what the library saves is the process: its start, its netlink cache and its exit, about 17 ms
// of a claim's 18 ms nft run. Used by long-lived root processes only (the gateway, see
// keepNftReady); anything that cannot load it keeps the process path.
import { createRequire } from 'node:module';

/** One script run by the library: 0 when applied, else nft's own error text. */
export interface LibNft {
  run(script: string): Promise<{ ok: true } | { ok: false; error: string }>;
}

interface KoffiFn {
  (...args: unknown[]): unknown;
  async(...args: unknown[]): void;
}
interface Koffi {
  load(path: string): { func(signature: string): KoffiFn };
}

const LIBRARY = 'libnftables.so.1';
/** nft_ctx_new's flag for a context that is not nft's own command line (no extra init). */
const NFT_CTX_DEFAULT = 0;

/**
 * Loads koffi and libnftables and makes one context. Undefined, with the reason, when either is
 * missing (the agent image has no node_modules; a host without the library): the caller keeps
 * the process path. The first asynchronous call is made here, so that starting koffi's worker
 * thread (~6 ms) falls on no command's path.
 */
export async function loadLibNft(): Promise<{ lib?: LibNft; why?: string }> {
  let koffi: Koffi;
  try {
    // Not bundled: a native module, found in node_modules beside dist/ (external in scripts/build.mjs).
    koffi = createRequire(__filenameOrUrl())('koffi') as Koffi;
  } catch (err) {
    return { why: `koffi is not installed (${firstLine(err)})` };
  }
  try {
    const so = koffi.load(LIBRARY);
    const ctxNew = so.func('void *nft_ctx_new(uint32_t flags)');
    const bufferOutput = so.func('int nft_ctx_buffer_output(void *ctx)');
    const bufferError = so.func('int nft_ctx_buffer_error(void *ctx)');
    const runBuffer = so.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)');
    const errorText = so.func('const char *nft_ctx_get_error_buffer(void *ctx)');
    const outputText = so.func('const char *nft_ctx_get_output_buffer(void *ctx)');
    const ctx = ctxNew(NFT_CTX_DEFAULT);
    if (!ctx) return { why: 'nft_ctx_new failed' };
    // Output and errors go to buffers of the context, not to this process's stdout and stderr.
    if (bufferOutput(ctx) !== 0 || bufferError(ctx) !== 0) return { why: 'could not buffer nft output' };
    // One call at a time on the one context (koffi runs .async calls on worker threads).
    let queue: Promise<unknown> = Promise.resolve();
    const runOnce = (script: string) =>
      new Promise<{ ok: true } | { ok: false; error: string }>((resolve) => {
        runBuffer.async(ctx, script, (err: unknown, rc: number) => {
          // Reading a buffer empties it: read both after every run, so nothing carries over.
          const errors = String(errorText(ctx) ?? '');
          outputText(ctx);
          if (err) resolve({ ok: false, error: firstLine(err) });
          else if (rc === 0) resolve({ ok: true });
          else resolve({ ok: false, error: errors.split('\n').find((l) => l.startsWith('Error')) || errors.trim().split('\n')[0] || `nft_run_cmd_from_buffer returned ${rc}` });
        });
      });
    const lib: LibNft = {
      run(script) {
        const result = queue.then(() => runOnce(script));
        queue = result.catch(() => {});
        return result;
      },
    };
    // An empty run: starts koffi's worker thread and proves the context answers.
    const warm = await lib.run('');
    if (!warm.ok) return { why: `libnftables refused an empty script: ${warm.error}` };
    return { lib };
  } catch (err) {
    return { why: `${LIBRARY} could not be loaded (${firstLine(err)})` };
  }
}

/** This module's location for require(), in the CommonJS bundle, the ESM bundle or the sources. */
function __filenameOrUrl(): string {
  return typeof __filename === 'string' ? __filename : import.meta.url;
}

function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0]!;
}
