// HTTPS for longer than a certificate lives, and certificates renewed by other tools (certbot
// replacing SBX_TLS_CERT's files): every `intervalMs` the gateway loads the certificate it should
// serve now (ca.ts serverCertificate: the user's files as they are on disk, or sbx's own, made
// again within 30 days of its end) and, when it is not the one served, has nginx and the Node TLS
// front take it. A pair that does not fit (files half replaced), or a certificate that no longer
// covers a name the served one does (sandboxes' URLs, a `port expose --domain` name), is logged
// once and the served one kept: a broken or wrong file never takes HTTPS down. A served
// certificate within a week of its end gives way all the same (an expired one covers nothing).
import { X509Certificate } from 'node:crypto';

export interface CertificatePair {
  cert: string;
  key: string;
}

/** A served certificate this close to its end gives way to a new one, whatever that covers. */
const ENDING_MS = 7 * 86_400_000;

/** How often the gateway looks (SBX_TLS_CHECK_MS, for tests; a minute by default; 100 ms at least). */
export const CERT_CHECK_MS = Math.min(Math.max(Number(process.env.SBX_TLS_CHECK_MS) || 60_000, 100), 2 ** 31 - 1);

export function refreshCertificate(o: {
  served: CertificatePair;
  load: () => Promise<CertificatePair>;
  apply: (next: CertificatePair) => Promise<void>;
  /** Host names clients ask for now: a new certificate must cover each that the served one covers. */
  names?: () => string[];
  log: (line: string) => void;
  intervalMs?: number;
}): () => void {
  let served = o.served;
  let busy = false;
  let lastProblem = '';
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void (async () => {
      try {
        const next = await o.load();
        if (next.cert === served.cert && next.key === served.key) return;
        const lost = lostNames(served.cert, next.cert, o.names?.() ?? []);
        // Kept no longer than it serves: within a week of its end, the new one is taken all the same.
        const ending = new Date(new X509Certificate(served.cert).validTo).getTime() - Date.now() < ENDING_MS;
        if (lost.length && !ending) throw new Error(`the new certificate does not cover ${lost.join(', ')}, which the one served does`);
        if (lost.length) o.log(`tls: the certificate served ends within a week: taking the new one, which does not cover ${lost.join(', ')}`);
        await o.apply(next);
        served = next;
        lastProblem = '';
        o.log('tls: serving a new certificate (renewed, or its files replaced)');
      } catch (err) {
        const problem = (err as Error).message;
        if (problem !== lastProblem) o.log(`tls: keeping the certificate served: ${problem}`);
        lastProblem = problem;
      } finally {
        busy = false;
      }
    })();
  }, o.intervalMs ?? CERT_CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}

/** The names `before` covers and `after` does not (the first certificate of each chain). */
export function lostNames(before: string, after: string, names: string[]): string[] {
  const old = new X509Certificate(before);
  const next = new X509Certificate(after);
  // No partial wildcards (sbx-*.domain): the names clients ask for are whole labels.
  const covers = (c: X509Certificate, name: string) => c.checkHost(name, { partialWildcards: false }) !== undefined;
  return names.filter((name) => covers(old, name) && !covers(next, name));
}
