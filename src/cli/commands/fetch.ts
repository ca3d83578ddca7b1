import { createReadStream, openSync } from 'node:fs';
import { UsageError } from '../../core/errors.ts';
import type { CommandInput } from '../context.ts';

function parseHeaders(values: string[] = []): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const h of values) {
    const colon = h.indexOf(':');
    if (colon <= 0) throw new UsageError(`invalid header "${h}": use 'Name: value'`);
    headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
  }
  return headers;
}

/** `-d @FILE`: opened now, so a file that cannot be read is a usage error, not a stream error later. */
function bodyFile(path: string) {
  try {
    return createReadStream('', { fd: openSync(path, 'r') });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new UsageError(`cannot read the request body from ${path} (-d @${path}): ${e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.code === 'EISDIR' ? 'it is a directory' : e.message}`);
  }
}

export async function run(input: CommandInput): Promise<number> {
  const { opts, io } = input;
  const [ref, port, path] = input.args as [string | undefined, string | undefined, string | undefined];
  if (!ref || !port) throw new UsageError('missing arguments: sbx fetch SANDBOX PORT [PATH]');
  const data = opts.data as string | undefined;
  const body = data === undefined ? undefined : data === '@-' ? process.stdin : data.startsWith('@') ? bodyFile(data.slice(1)) : data;
  const res = await (await input.sbx()).fetch(ref, port, {
    path: path ?? '/',
    method: (opts.method as string | undefined)?.toUpperCase() ?? (body !== undefined ? 'POST' : 'GET'),
    headers: parseHeaders(opts.header as string[] | undefined),
    body,
    http2: !!opts.http2,
  });
  if (opts.include) {
    let head = res.httpVersion === '2' ? `HTTP/2 ${res.status}\n` : `HTTP/1.1 ${res.status} ${res.statusText}\n`;
    for (let i = 0; i < res.rawHeaders.length; i += 2) head += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\n`;
    io.stdout.write(head + '\n');
  }
  await new Promise<void>((resolve, reject) => {
    res.body.on('error', reject);
    res.body.on('end', resolve);
    res.body.pipe(io.stdout, { end: false });
  });
  // Like curl --fail-with-body: the body is printed, and an HTTP error is a failed command.
  return res.status >= 400 ? 1 : 0;
}
