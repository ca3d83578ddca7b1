// Where a redirected connection was really going (its original destination), read from the
// kernel's connection tracking table: Node cannot ask the socket (SO_ORIGINAL_DST). Only needed
// when a client names no host (TLS without SNI, HTTP without Host).
import { readFile } from 'node:fs/promises';
import ipaddr from 'ipaddr.js';

/** One spelling per address: the kernel prints IPv6 in full (fd00:0000:...:0002). */
function canonical(address: string): string {
  try {
    return ipaddr.process(address).toString();
  } catch {
    return address;
  }
}

export interface OriginalDestination {
  address: string;
  port: number;
}

/** TCP states of a connection that has ended or is ending (conntrack keeps them up to 120 s). */
const ENDED = / (TIME_WAIT|CLOSE|CLOSE_WAIT|LAST_ACK|FIN_WAIT) /;

/** The original destination of the connection from client:clientPort redirected to localPort. */
export async function originalDestination(client: string, clientPort: number, localPort: number, table = '/proc/net/nf_conntrack'): Promise<OriginalDestination | undefined> {
  let text: string;
  try {
    text = await readFile(table, 'utf8');
  } catch {
    return undefined;
  }
  const want = canonical(client);
  for (const line of text.split('\n')) {
    if (!line.includes(`sport=${clientPort} `)) continue;
    // An ended connection on the same tuple (an earlier one of the same sandbox, or of a removed
    // sandbox whose address this one has now) is not the one asked about.
    if (ENDED.test(line)) continue;
    // Each line holds the original tuple, then the reply tuple (src dst sport dport, twice).
    const tuples = [...line.matchAll(/src=(\S+) dst=(\S+) sport=(\d+) dport=(\d+)/g)];
    const [orig, reply] = tuples;
    if (!orig || !reply) continue;
    if (canonical(orig[1]!) === want && Number(orig[3]) === clientPort && Number(reply[3]) === localPort && Number(reply[4]) === clientPort) {
      return { address: canonical(orig[2]!), port: Number(orig[4]) };
    }
  }
  return undefined;
}
