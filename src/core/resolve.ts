// Finding a sandbox from what the user typed: a name, an id or a unique id prefix (pure).
import { NotFoundError, UsageError } from './errors.ts';
import type { SandboxRecord } from './sandbox.ts';

export function resolveSandbox(ref: string, records: readonly SandboxRecord[]): SandboxRecord {
  const live = records.filter((r) => !r.creating);
  // A name held by a sandbox and by what a failed create left (status removing): the sandbox.
  const exact = live.find((r) => (r.name === ref && !r.removing) || r.id === ref) ?? live.find((r) => r.name === ref);
  if (exact) return exact;
  const byPrefix = ref.length > 0 ? live.filter((r) => r.id.startsWith(ref)) : [];
  if (byPrefix.length === 1) return byPrefix[0]!;
  if (byPrefix.length > 1) {
    throw new UsageError(`"${ref}" matches ${byPrefix.length} sandboxes (${byPrefix.map((r) => r.name).join(', ')}): give more of the id or the name`);
  }
  throw new NotFoundError(`no sandbox named "${ref}" (sbx ls lists them)`);
}
