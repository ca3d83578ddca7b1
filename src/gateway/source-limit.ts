// The per-source connection limit of the Node engine's own listener (SBX_GATEWAY_SOURCE_LIMIT; on
// the nginx engine HAProxy and nginx keep it: haproxy-config.ts, nginx-config.ts). One client
// address cannot hold every connection the gateway can take; loopback clients are not counted.
import { BlockList, isIPv4, type Server, type Socket } from 'node:net';

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 addresses (::ffff:127.0.0.1). */
export function isLoopback(address: string): boolean {
  const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1] ?? address;
  return isIPv4(v4) ? LOOPBACK.check(v4, 'ipv4') : LOOPBACK.check(address, 'ipv6');
}

/** Closes, on accept, each connection past `limit` from one address; 0 limits nothing. */
export function limitPerSource(server: Server, limit: number): void {
  if (!limit) return;
  const held = new Map<string, number>();
  server.prependListener('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    if (!address || isLoopback(address)) return;
    const count = (held.get(address) ?? 0) + 1;
    if (count > limit) {
      socket.destroy();
      return;
    }
    held.set(address, count);
    socket.once('close', () => {
      const left = (held.get(address) ?? 1) - 1;
      if (left > 0) held.set(address, left);
      else held.delete(address);
    });
  });
}
