// A file replaced whole or not at all (a temporary file, then a rename), readable by its owner only.
import { renameSync, writeFileSync } from 'node:fs';

export function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, path);
}
