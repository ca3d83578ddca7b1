// Reading the certificate an HTTPS gateway serves now, from another process (`port expose
// --domain` checks that it covers the name). The gateway swaps it (a renewal) by writing a new copy,
// naming it in gateway.json, then removing the old copy: a reader that read gateway.json just
// before finds its copy gone, and reads gateway.json again.
import { readFileSync } from 'node:fs';

/** How many times gateway.json is read again after the copy it named was gone. */
const REREADS = 3;

export interface ServedCertificate {
  path: string;
  pem: Buffer;
}

/**
 * The PEM of the copy that `state()` (gateway.json, read afresh each call) names. Undefined when it
 * names none; throws what reading the file threw when it is still missing after REREADS.
 */
export function readServedCertificate(state: () => { tlsCert?: string } | undefined, read: (path: string) => Buffer = readFileSync): ServedCertificate | undefined {
  for (let attempt = 0; ; attempt++) {
    const path = state()?.tlsCert;
    if (!path) return undefined;
    try {
      return { path, pem: read(path) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= REREADS) throw err;
    }
  }
}
