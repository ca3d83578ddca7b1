// The relay: runs inside a sandbox's network namespace (started by the gateway through nsenter,
// so the sandbox itself gets no NET_ADMIN) and listens on a unix socket in SBX_HOME/run. Each
// connection names a port on its first line; the relay connects to it on the sandbox's loopback
// (127.0.0.1, then ::1) and passes bytes both ways. This is how servers bound only to loopback
// are reachable through their URLs.
import { createConnection, createServer, type Socket } from 'node:net';
import { rmSync } from 'node:fs';

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write('usage: relay SOCKET\n');
  process.exit(2);
}

function connectLoopback(port: number, client: Socket): void {
  const codes: string[] = [];
  const tryHost = (hosts: string[]) => {
    const upstream = createConnection({ host: hosts[0], port });
    upstream.once('connect', () => {
      client.write('OK\n');
      upstream.setNoDelay(true);
      client.pipe(upstream).pipe(client);
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    upstream.once('error', (err: NodeJS.ErrnoException) => {
      codes.push(err.code ?? 'EFAIL');
      if (hosts.length > 1) return tryHost(hosts.slice(1));
      // "Refused" on either address means nothing listens there (the other may not even exist).
      client.end(`ERR ${codes.includes('ECONNREFUSED') ? 'ECONNREFUSED' : codes[0]}\n`);
    });
  };
  tryHost(['127.0.0.1', '::1']);
}

rmSync(socketPath, { force: true });
const server = createServer((client) => {
  client.setNoDelay(true);
  let buffered = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    const nl = buffered.indexOf(10);
    if (nl < 0) {
      if (buffered.length > 16) client.destroy();
      return;
    }
    client.off('data', onData);
    client.pause();
    const port = Number(buffered.subarray(0, nl).toString());
    const rest = buffered.subarray(nl + 1);
    if (rest.length) client.unshift(rest);
    if (!(port >= 1 && port <= 65535)) return void client.end('ERR EINVAL\n');
    connectLoopback(port, client); // pipe() resumes the client once the upstream connects
  };
  client.on('data', onData);
  client.on('error', () => {});
});
server.listen(socketPath, () => process.stdout.write('ready\n'));
// The gateway holds our stdin: when it goes away, so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
process.on('exit', () => rmSync(socketPath, { force: true }));
