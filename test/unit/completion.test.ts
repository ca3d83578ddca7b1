import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderCompletion } from '../../src/cli/completion.ts';
import { ROOT } from '../helpers.ts';

describe('shell completions', () => {
  for (const [shell, file] of [['bash', 'sbx.bash'], ['zsh', '_sbx'], ['fish', 'sbx.fish']] as const) {
    it(`completions/${file} matches the command tree (npm run completions regenerates it)`, () => {
      const committed = readFileSync(join(ROOT, 'completions', file), 'utf8');
      assert.equal(committed, renderCompletion(shell), `completions/${file} has drifted from src/cli/spec.ts`);
    });
  }
});
