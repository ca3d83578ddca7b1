// Reads the server name (SNI) from a TLS ClientHello without terminating TLS: the egress proxy
// decides on it, then passes the bytes through untouched.

export type HelloResult =
  | { state: 'more' } // not enough bytes yet
  | { state: 'not-tls' }
  | { state: 'done'; serverName?: string };

/** Parses what arrived so far; call again with more bytes while it says 'more'. */
export function parseClientHello(buf: Buffer): HelloResult {
  // TLS records: type 22 (handshake), version, length; the hello may span several records.
  const handshake: Buffer[] = [];
  let offset = 0;
  let have = 0;
  let need = -1;
  while (need < 0 || have < need) {
    if (buf.length < offset + 5) return { state: 'more' };
    if (buf[offset] !== 22 || buf[offset + 1] !== 3) return { state: 'not-tls' };
    const len = buf.readUInt16BE(offset + 3);
    if (buf.length < offset + 5 + len) return { state: 'more' };
    const fragment = buf.subarray(offset + 5, offset + 5 + len);
    handshake.push(fragment);
    have += fragment.length;
    offset += 5 + len;
    if (need < 0) {
      const hs = Buffer.concat(handshake);
      if (hs.length < 4) continue;
      if (hs[0] !== 1) return { state: 'not-tls' }; // not a ClientHello
      need = 4 + hs.readUIntBE(1, 3);
    }
  }
  return { state: 'done', serverName: serverNameOf(Buffer.concat(handshake).subarray(4, need)) };
}

function serverNameOf(hello: Buffer): string | undefined {
  try {
    let p = 2 + 32; // client_version, random
    p += 1 + hello[p]!; // session id
    p += 2 + hello.readUInt16BE(p); // cipher suites
    p += 1 + hello[p]!; // compression methods
    if (p + 2 > hello.length) return undefined;
    const end = p + 2 + hello.readUInt16BE(p);
    p += 2;
    while (p + 4 <= end) {
      const type = hello.readUInt16BE(p);
      const len = hello.readUInt16BE(p + 2);
      p += 4;
      if (type === 0) {
        // server_name: list length, then entries of (type, length, name); type 0 is a host name.
        let q = p + 2;
        while (q + 3 <= p + len) {
          const nameType = hello[q]!;
          const nameLen = hello.readUInt16BE(q + 1);
          if (nameType === 0) return hello.subarray(q + 3, q + 3 + nameLen).toString('ascii');
          q += 3 + nameLen;
        }
        return undefined;
      }
      p += len;
    }
  } catch {}
  return undefined;
}
