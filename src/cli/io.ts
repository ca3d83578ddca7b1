// Output that knows where it goes (after gh): tables and colour on a TTY, tab-separated lines in
// a pipe, stable JSON with --json. Progress and prompts go to stderr so stdout stays parseable.
import { Chalk, type ChalkInstance } from 'chalk';

export class IO {
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
  readonly isTTY: boolean;
  readonly color: ChalkInstance;
  readonly errColor: ChalkInstance;

  constructor(stdout = process.stdout, stderr = process.stderr, env = process.env) {
    this.stdout = stdout;
    this.stderr = stderr;
    this.isTTY = !!stdout.isTTY;
    this.color = new Chalk({ level: colorLevel(stdout, env) });
    this.errColor = new Chalk({ level: colorLevel(stderr, env) });
  }

  /** Prompts only when a person is there to answer: stdin and stdout are terminals. */
  get canPrompt(): boolean {
    return !!process.stdin.isTTY && this.isTTY;
  }

  out(text = ''): void {
    this.stdout.write(text.endsWith('\n') ? text : text + '\n');
  }

  json(value: unknown): void {
    this.out(JSON.stringify(value, null, 2));
  }

  /** A progress or status line for people; silent in JSON mode callers by not calling it. */
  info(text: string): void {
    this.stderr.write(text + '\n');
  }

  success(text: string): void {
    this.stderr.write(`${this.errColor.green('✓')} ${text}\n`);
  }

  /** A table on a TTY; header-less tab-separated rows otherwise (like gh). */
  async table(head: string[], rows: string[][]): Promise<void> {
    if (!this.isTTY) {
      for (const row of rows) this.out(row.join('\t'));
      return;
    }
    const { default: Table } = await import('cli-table3');
    const table = new Table({
      head: head.map((h) => this.color.bold(h)),
      chars: { top: '', 'top-mid': '', 'top-left': '', 'top-right': '', bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '', left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '  ' },
      style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
    });
    table.push(...rows);
    this.out(table.toString());
  }

  /** Key/value details: aligned and coloured on a TTY, "key<TAB>value" otherwise. */
  details(pairs: Array<[string, string]>): void {
    if (!this.isTTY) {
      for (const [k, v] of pairs) this.out(`${k}\t${v}`);
      return;
    }
    const width = Math.max(...pairs.map(([k]) => k.length));
    for (const [k, v] of pairs) this.out(`${this.color.dim(k.padEnd(width))}  ${v}`);
  }
}

function colorLevel(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv): 0 | 1 | 2 | 3 {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return 0;
  if (env.FORCE_COLOR !== undefined) {
    const n = env.FORCE_COLOR === '' || env.FORCE_COLOR === 'true' ? 1 : Number(env.FORCE_COLOR);
    return (Number.isInteger(n) && n >= 0 && n <= 3 ? n : 1) as 0 | 1 | 2 | 3;
  }
  if (!stream.isTTY || env.TERM === 'dumb') return 0;
  const depth = stream.getColorDepth?.() ?? 4;
  return depth >= 24 ? 3 : depth >= 8 ? 2 : 1;
}
