// Traffic tokens for private ports: 192 random bits, compared in constant time (no early exit).

/** The request header that carries a sandbox's traffic token (sbx fetch and port forward send it). */
export const TOKEN_HEADER = 'x-sbx-traffic-token';

export function newToken(): string {
  const bytes = new Uint8Array(24);
  crypto.getRandomValues(bytes);
  return Buffer.from(bytes).toString('base64url');
}

/** Constant-time for equal lengths; lengths are not secret (every token has the same). */
export function tokensEqual(given: string | undefined, expected: string): boolean {
  if (given === undefined) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  let diff = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) diff |= (a[i] ?? 0) ^ b[i]!;
  return diff === 0;
}
