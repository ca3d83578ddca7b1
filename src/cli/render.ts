// How sandboxes look for people (tables, details) — JSON output is the SandboxInfo object itself.
import type { SandboxInfo } from '../core/sandbox.ts';
import type { PortInfo } from '../core/ports.ts';
import type { IO } from './io.ts';
import type { NetworkPolicy } from '../core/network-policy.ts';

export function statusText(io: IO, status: string): string {
  const c = io.color;
  const paint = { running: c.green, paused: c.yellow, stopped: c.gray, missing: c.red, creating: c.cyan, removing: c.red }[status] ?? ((s: string) => s);
  return paint(status);
}

export function ago(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export async function printSandboxTable(io: IO, list: SandboxInfo[]): Promise<void> {
  const rows = list.map((s) => [
    s.name,
    s.id,
    s.image,
    io.isTTY ? statusText(io, s.status) : s.status,
    io.isTTY ? ago(s.createdAt) : s.createdAt,
  ]);
  await io.table(['NAME', 'ID', 'IMAGE', 'STATUS', 'CREATED'], rows);
}

export function printSandboxDetails(io: IO, s: SandboxInfo): void {
  const pairs: Array<[string, string]> = [
    ['name', s.name],
    ['id', s.id],
    ['image', s.image],
    ['status', io.isTTY ? statusText(io, s.status) : s.status],
    ['created', s.createdAt],
    ['command', s.command.length ? s.command.join(' ') : '(idle)'],
  ];
  if (s.ip) pairs.push(['ip', s.ip]);
  if (s.ip6) pairs.push(['ip6', s.ip6]);
  if (s.memory) pairs.push(['memory', `${Math.round(s.memory / 1024 / 1024)}m`]);
  if (s.cpus) pairs.push(['cpus', String(s.cpus)]);
  pairs.push(['pids-limit', String(s.pidsLimit)]);
  const env = Object.entries(s.env);
  if (env.length) pairs.push(['env', env.map(([k, v]) => `${k}=${v}`).join(' ')]);
  pairs.push(['bridge', s.bridge]);
  for (const p of s.ports) pairs.push([`port ${p.port}`, `${p.url}${p.public ? '' : ' (private)'}`]);
  pairs.push(...networkPairs(s.network));
  if (s.maskHost) pairs.push(['mask-host', s.maskHost]);
  if (s.expiresAt) pairs.push(['expires', s.expiresAt]);
  if (s.token) pairs.push(['token', s.token]);
  if (s.removing) pairs.push(['left', `${s.removing.left.join(', ')}${s.removing.error ? ` (${s.removing.error})` : ''}: sbx rm ${s.name} retries`]);
  io.details(pairs);
}

export async function printPortTable(io: IO, ports: PortInfo[]): Promise<void> {
  await io.table(
    ['PORT', 'URL', 'ACCESS'],
    ports.map((p) => [String(p.port), p.url, p.public ? 'public' : io.isTTY ? io.color.yellow('private') : 'private']),
  );
}

/** The egress policy as detail lines (only the lists that are set). */
export function networkPairs(p: NetworkPolicy): Array<[string, string]> {
  const pairs: Array<[string, string]> = [['egress', p.mode]];
  if (p.allowOut.length) pairs.push(['allow-out', p.allowOut.join(' ')]);
  if (p.denyOut.length) pairs.push(['deny-out', p.denyOut.join(' ')]);
  if (p.allowPorts.length) pairs.push(['allow-ports', p.allowPorts.join(' ')]);
  if (p.denyPorts.length) pairs.push(['deny-ports', p.denyPorts.join(' ')]);
  return pairs;
}
