// The sbx_token cookie against other pages of the same site. Every sandbox host is under one
// domain (*.sbx.localhost), so to the browser a page of any sandbox is "same-site" with every
// other: SameSite=Lax does not stop its fetches, forms or WebSockets from carrying the cookie of
// a private port. A request authenticated by that cookie alone is taken only when it comes from
// the port's own pages or from the user (a typed URL, a bookmark), as the browser attests it.
import type { IncomingHttpHeaders } from 'node:http';
import type { GatewayError } from './responses.ts';

/** `scheme://host[:port]` in lower case, the default port left out (as browsers write Origin). */
function originOf(host: string, tls: boolean): string {
  return tls ? `https://${host.toLowerCase().replace(/:443$/, '')}` : `http://${host.toLowerCase().replace(/:80$/, '')}`;
}

/**
 * Why a request that carries the token only in the cookie is refused, or undefined when it may
 * go on. `host` is the Host the client sent. Clients that send neither Sec-Fetch-Site nor Origin
 * (curl, scripts) pass: the rule is about what a browser does on a page's behalf.
 */
export function crossSiteRefusal(headers: IncomingHttpHeaders, host: string | undefined, tls = false): GatewayError | undefined {
  const site = headers['sec-fetch-site'];
  const origin = headers.origin;
  const fromPage = site !== undefined && site !== 'same-origin' && site !== 'none';
  const foreignOrigin = origin !== undefined && (host === undefined || origin.toLowerCase().replace(tls ? /:443$/ : /:80$/, '') !== originOf(host, tls));
  if (!fromPage && !foreignOrigin) return undefined;
  return {
    status: 403,
    code: 'cross_site',
    message:
      'the sbx_token cookie is only accepted from pages of this port itself or a URL opened directly: ' +
      'this request came from another page. Open the URL directly (or with ?sbx_token=), or send the token in the x-sbx-traffic-token header',
  };
}
