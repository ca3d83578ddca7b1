// The traffic token of private ports: where a request may carry it, and removing it before the
// request goes into the sandbox (the sandbox never sees its own token).
import type { IncomingMessage } from 'node:http';

import { TOKEN_HEADER } from '../core/token.ts';
export { TOKEN_HEADER };
export const TOKEN_COOKIE = 'sbx_token';
export const TOKEN_QUERY = 'sbx_token';

export interface FoundToken {
  token?: string;
  /** Came as ?sbx_token=: the browser is sent to the same URL without it, with a cookie. */
  fromQuery: boolean;
  /**
   * Came in the sbx_token cookie only: the browser sends it whoever asks it to (any page of the
   * same site), so the request must also pass crossSiteRefusal (cookie-guard.ts).
   */
  fromCookie?: true;
}

/**
 * A %-escaped value as text. A malformed escape (%E0%A4%A) comes back as it is: it cannot equal a
 * token (base64url has no %), so the request is refused as token_invalid instead of failing.
 */
function decodeEscapes(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return decodeEscapes(part.slice(eq + 1).trim());
  }
  return undefined;
}

export function findToken(req: IncomingMessage): FoundToken {
  const header = req.headers[TOKEN_HEADER];
  if (typeof header === 'string' && header) return { token: header, fromQuery: false };
  const auth = req.headers.authorization;
  if (auth && /^bearer\s+/i.test(auth)) return { token: auth.replace(/^bearer\s+/i, '').trim(), fromQuery: false };
  const q = queryToken(req.url ?? '');
  if (q !== undefined) return { token: q, fromQuery: true };
  const cookie = cookieValue(req.headers.cookie, TOKEN_COOKIE);
  if (cookie) return { token: cookie, fromQuery: false, fromCookie: true };
  return { fromQuery: false };
}

function queryToken(url: string): string | undefined {
  const q = url.indexOf('?');
  if (q < 0) return undefined;
  for (const part of url.slice(q + 1).split('&')) {
    const [k, v = ''] = part.split('=');
    if (k === TOKEN_QUERY) return decodeEscapes(v);
  }
  return undefined;
}

/** The URL without ?sbx_token=..., the rest of the query kept as it was. */
export function withoutQueryToken(url: string): string {
  const q = url.indexOf('?');
  if (q < 0) return url;
  const kept = url.slice(q + 1).split('&').filter((p) => p.split('=')[0] !== TOKEN_QUERY);
  return url.slice(0, q) + (kept.length ? `?${kept.join('&')}` : '');
}

/** Raw headers to send upstream: the token header, a bearer carrying the token, and the cookie go. */
export function stripToken(rawHeaders: string[], token: string | undefined): string[] {
  const out: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    let value = rawHeaders[i + 1]!;
    const lower = name.toLowerCase();
    if (lower === TOKEN_HEADER) continue;
    if (lower === 'authorization' && token && value.replace(/^bearer\s+/i, '').trim() === token) continue;
    if (lower === 'cookie') {
      value = value.split(';').filter((p) => p.split('=')[0]!.trim() !== TOKEN_COOKIE).join(';').trim();
      if (!value) continue;
    }
    out.push(name, value);
  }
  return out;
}
