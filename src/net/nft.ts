// Runs nftables scripts: the only place that touches the kernel's firewall. Each call is one
// transaction, so it is all-or-nothing: libnftables in this process for the gateway (libnft.ts),
// else an `nft -f -` process.
import { spawn, type ChildProcess } from 'node:child_process';
import { RuntimeError } from '../core/errors.ts';
import { loadLibNft, type LibNft } from './libnft.ts';

export function requireRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new RuntimeError('egress rules need root on the Docker host (nftables): run sbx as root');
  }
}

const startNft = (): ChildProcess => spawn(process.env.SBX_NFT ?? 'nft', ['-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });

/**
 * An `nft -f -` started ahead, waiting for its script: the gateway keeps one (keepNftReady), so a
 * run skips the process start (about 6 ms of a 20 ms run: a warm-pool claim's is on its path).
 * nft reads the whole script before it looks at the ruleset, so an early start changes nothing
 * of what it does.
 */
interface Spare {
  child: ChildProcess;
  failed?: boolean;
}
let spare: Spare | undefined;
let keepReady = false;
const SPARE_DELAY_MS = 100;

/** libnftables in this process, once loaded (keepNftReady); runs before that use a process. */
let library: LibNft | undefined;
let libraryLoad: Promise<string> | undefined;

/**
 * On (long-lived root processes): nft scripts run through libnftables in this process when it
 * loads, else one nft is kept started ahead for the next run. Off: the spare nft is ended.
 * Resolves to which path runs them, for the log. `SBX_NFT` (the tests' stand-in for nft) and
 * `SBX_NFT_LIBRARY=0` keep the process path.
 */
export function keepNftReady(on: boolean): Promise<string> {
  keepReady = on;
  if (!on) {
    spare?.child.kill();
    spare = undefined;
    return Promise.resolve('off');
  }
  if (process.env.SBX_NFT || process.env.SBX_NFT_LIBRARY === '0') {
    prepareSpare();
    return Promise.resolve(`an nft process per run (${process.env.SBX_NFT ? 'SBX_NFT is set' : 'SBX_NFT_LIBRARY=0'})`);
  }
  return (libraryLoad ??= loadLibNft().then(({ lib, why }) => {
    library = lib;
    if (lib) return 'libnftables in this process';
    prepareSpare();
    return `an nft process per run (${why})`;
  }));
}

function prepareSpare(): void {
  if (!keepReady || spare || library) return;
  const child = startNft();
  const s: Spare = { child };
  // Not started (no nft) or ended idle: not handed out; the run starts its own and says why.
  child.on('error', () => (s.failed = true));
  child.on('exit', () => (s.failed = true));
  child.stdin?.on('error', () => {});
  // Waiting does not keep this process alive.
  for (const h of [child, child.stdin, child.stderr]) (h as { unref?: () => void } | null)?.unref?.();
  spare = s;
}

/** The nft started ahead, when there is one that still waits. */
function takeSpare(): ChildProcess | undefined {
  const s = spare;
  spare = undefined;
  if (!s || s.failed) return undefined;
  for (const h of [s.child, s.child.stdin, s.child.stderr]) (h as { ref?: () => void } | null)?.ref?.();
  return s.child;
}

interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  error?: NodeJS.ErrnoException;
}

/** Feeds the script to an nft process and waits for its end. */
function feed(child: ChildProcess, script: string): Promise<Ran> {
  return new Promise((resolve) => {
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', (error: NodeJS.ErrnoException) => resolve({ code: null, signal: null, stderr, error }));
    child.on('close', (code, signal) => resolve({ code, signal, stderr }));
    child.stdin!.on('error', () => {});
    child.stdin!.end(script);
  });
}

/** Applies a script atomically; throws a RuntimeError with nft's own words when it refuses. */
export async function runNft(script: string, what: string): Promise<void> {
  requireRoot();
  // libnftables reads a C string: a NUL would end the script early, and the part before it would
  // be applied alone. sbx's scripts never hold one (names and entries are validated); refused.
  if (script.includes('\0')) throw new RuntimeError(`${what}: the nft script holds a NUL character`);
  if (library) {
    const done = await library.run(script);
    if (done.ok) return;
    if (!done.unusable) throw new RuntimeError(`${what}: ${firstError(done.errors)}`);
    // Refused, and no new context could be made after it: the process path from now on (each
    // script is whole, or adds what is there already, so the process may run it again).
    library = undefined;
    if (keepReady) prepareSpare();
  }
  const early = takeSpare();
  let ran = early ? await feed(early, script) : undefined;
  // One started ahead that ended without a word (killed while it waited): a process of its own.
  // (Every script of sbx's may run twice: each is whole, or adds what is there already.)
  if (!ran || (ran.code !== 0 && !ran.stderr.trim())) ran = await feed(startNft(), script);
  // The next one starts a little after this run: starting a process blocks this one for a few ms,
  // which must not fall on the path of the command that waits for this run.
  if (keepReady) setTimeout(prepareSpare, SPARE_DELAY_MS).unref();
  if (ran.error) {
    throw new RuntimeError(ran.error.code === 'ENOENT' ? `${what}: nft is not installed (apt-get install nftables, or ./scripts/setup)` : `${what}: ${ran.error.message}`);
  }
  if (ran.code === 0) return;
  throw new RuntimeError(`${what}: ${firstError(ran.stderr) || `nft ended (${ran.code ?? ran.signal})`}`);
}

/** The line of nft's output that says what it refused (either path), else its first line. */
function firstError(text: string): string {
  return text.split('\n').find((l) => l.startsWith('Error')) || text.trim().split('\n')[0] || '';
}
