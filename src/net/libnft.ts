// nftables' own library (libnftables, from the nftables package) called in this process through
// koffi, instead of an `nft -f -` process per script. A script is one transaction either way;
// what the library saves is the process's start and exit (about 15 ms of a claim's 18 ms nft
// run). Used by long-lived root processes only (the gateway, see keepNftReady); anything that
// cannot load it keeps the process path.
import { readdirSync, readlinkSync } from 'node:fs';
import { firstLine, requireKoffi, type KoffiFn } from './koffi.ts';

/** One script run by the library: applied, or what nft wrote about it (`errors`, its error buffer). */
export type LibNftResult = { ok: true } | { ok: false; errors: string; unusable?: boolean };
export interface LibNft {
  run(script: string): Promise<LibNftResult>;
}


const LIBRARY = 'libnftables.so.1';
/** nft_ctx_new's flag for a context that is not nft's own command line (no extra init). */
const NFT_CTX_DEFAULT = 0;
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/** The sockets this process holds, by fd: `fd=socket:[inode]` (the listing's own fd reads as nothing). */
const sockets = () => new Set(readdirSync('/proc/self/fd').map((fd) => `${fd}=${linkOf(fd)}`).filter((l) => l.includes('=socket:')));

/**
 * Loads koffi and libnftables. Undefined, with the reason, when either is missing (the agent
 * image has no node_modules; a host without the library): the caller keeps the process path.
 * An empty run is made here, so that the first call's set-up falls on no command's path.
 * (libnftables ends the process when it cannot open its netlink socket at all: a host where
 * that fails could not run `nft` either.)
 */
export async function loadLibNft(): Promise<{ lib?: LibNft; why?: string }> {
  const koffi = requireKoffi();
  if ('why' in koffi) return { why: koffi.why };
  try {
    const so = koffi.load(LIBRARY);
    const libc = koffi.load('libc.so.6');
    const fcntl = libc.func('int fcntl(int fd, int cmd, ...)');
    const ctxNew = so.func('void *nft_ctx_new(uint32_t flags)');
    const ctxFree = so.func('void nft_ctx_free(void *ctx)');
    const bufferOutput = so.func('int nft_ctx_buffer_output(void *ctx)');
    const bufferError = so.func('int nft_ctx_buffer_error(void *ctx)');
    const runBuffer = so.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)');
    const errorText = so.func('const char *nft_ctx_get_error_buffer(void *ctx)');
    const outputText = so.func('const char *nft_ctx_get_output_buffer(void *ctx)');

    /**
     * A context of its own: its netlink socket is made close-on-exec, which libnftables does not
     * do. Inherited, it would let the gateway's children (the unprivileged egress worker, nginx)
     * read the kernel's replies meant for this process: a stolen error would make a refused
     * script look applied. Throws when the socket cannot be found or marked.
     */
    const newContext = (): unknown => {
      const before = sockets();
      const ctx = ctxNew(NFT_CTX_DEFAULT);
      if (!ctx) throw new Error('nft_ctx_new failed');
      const fresh = [...sockets()].filter((l) => !before.has(l)).map((l) => Number(l.split('=')[0]));
      for (const fd of fresh) fcntl(fd, F_SETFD, 'int', FD_CLOEXEC);
      if (fresh.length === 0 || fresh.some((fd) => ((fcntl(fd, F_GETFD) as number) & FD_CLOEXEC) === 0)) {
        ctxFree(ctx);
        throw new Error('could not make the netlink socket of libnftables close-on-exec');
      }
      // Output and errors go to buffers of the context, not to this process's stdout and stderr.
      if (bufferOutput(ctx) !== 0 || bufferError(ctx) !== 0) {
        ctxFree(ctx);
        throw new Error('could not buffer nft output');
      }
      return ctx;
    };
    let ctx = newContext();
    // One call at a time on the one context (koffi runs .async calls on libuv's thread pool).
    let queue: Promise<unknown> = Promise.resolve();
    const runOnce = (script: string) =>
      new Promise<LibNftResult>((resolve) => {
        runBuffer.async(ctx, script, (err: unknown, rc: number) => {
          // Reading a buffer empties it: read both after every run, so nothing carries over.
          const errors = String(errorText(ctx) ?? '');
          outputText(ctx);
          if (!err && rc === 0) return resolve({ ok: true });
          const error = err ? firstLine(err) : errors || `nft_run_cmd_from_buffer returned ${rc}`;
          // After a refusal the next run starts on a new socket: no reply of this run that the
          // library left unread can be taken for the next one's.
          try {
            ctxFree(ctx);
            ctx = newContext();
            resolve({ ok: false, errors: error });
          } catch (again) {
            resolve({ ok: false, errors: error, unusable: true });
            process.emitWarning(`libnftables: ${firstLine(again)}`);
          }
        });
      });
    const lib: LibNft = {
      run(script) {
        const result = queue.then(() => runOnce(script));
        queue = result.catch(() => {});
        return result;
      },
    };
    // An empty run: proves the context answers.
    const warm = await lib.run('');
    if (!warm.ok) return { why: `libnftables refused an empty script: ${warm.errors.trim().split('\n')[0]}` };
    return { lib };
  } catch (err) {
    return { why: `${LIBRARY} could not be used (${firstLine(err)})` };
  }
}

function linkOf(fd: string): string {
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return '';
  }
}

