// koffi (calls into C libraries without a compiler), loaded on first use by the modules that call
// the kernel's libraries: libnft.ts (libnftables) and nflog.ts (netlink sockets through libc).
import { createRequire } from 'node:module';

export interface KoffiFn {
  (...args: unknown[]): unknown;
  async(...args: unknown[]): void;
}
export interface Koffi {
  load(path: string): { func(signature: string): KoffiFn };
  errno(): number;
  sizeof(type: string): number;
}

/** koffi, or why not. Not bundled: a native module, found in node_modules beside dist/ (createRequire is left alone by esbuild). */
export function requireKoffi(): Koffi | { why: string } {
  try {
    return createRequire(__filenameOrUrl())('koffi') as Koffi;
  } catch (err) {
    return { why: `koffi is not installed (${firstLine(err)})` };
  }
}

/** This module's location for require(), in the CommonJS bundle, the ESM bundle or the sources. */
function __filenameOrUrl(): string {
  return typeof __filename === 'string' ? __filename : import.meta.url;
}

export function firstLine(err: unknown): string {
  return String((err as Error)?.message ?? err).split('\n')[0]!;
}
