// Output that knows where it goes (after gh): tables and colour on a TTY, tab-separated lines in
// a pipe, stable JSON with --json. Progress and prompts go to stderr so stdout stays parseable.
import { styleText } from 'node:util';

/** The styles sbx's output uses: ANSI when colour is on (Node's util.styleText), plain otherwise. */
export interface Palette {
  bold(text: string): string;
  dim(text: string): string;
  gray(text: string): string;
  green(text: string): string;
  yellow(text: string): string;
  cyan(text: string): string;
  red(text: string): string;
}

const STYLES = ['bold', 'dim', 'gray', 'green', 'yellow', 'cyan', 'red'] as const;

/** sbx decides whether to colour (colorOn): styleText is told not to look at the stream again. */
export function palette(on: boolean): Palette {
  return Object.fromEntries(STYLES.map((f) => [f, on ? (text: string) => (text ? styleText(f, text, { validateStream: false }) : text) : (text: string) => text])) as unknown as Palette;
}

export class IO {
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
  readonly isTTY: boolean;
  readonly color: Palette;
  readonly errColor: Palette;

  constructor(stdout = process.stdout, stderr = process.stderr, env = process.env) {
    this.stdout = stdout;
    this.stderr = stderr;
    this.isTTY = !!stdout.isTTY;
    this.color = palette(colorOn(stdout, env));
    this.errColor = palette(colorOn(stderr, env));
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

/** Colour for a stream: NO_COLOR wins, then FORCE_COLOR (0 is off, as for chalk before), then a terminal that is not dumb. */
function colorOn(stream: NodeJS.WriteStream, env: NodeJS.ProcessEnv): boolean {
  if (env.NO_COLOR !== undefined && env.NO_COLOR !== '') return false;
  if (env.FORCE_COLOR !== undefined) return env.FORCE_COLOR === '' || Number(env.FORCE_COLOR) !== 0;
  return !!stream.isTTY && env.TERM !== 'dumb';
}
