// The command tree as plain data: commander is wired from it (program.ts) and the shell
// completions are generated from it (completion.ts), so the two cannot disagree.
// No heavy imports here: this module is loaded on every start.

/** What a value can be completed from. */
export type Completer = 'sandboxes' | 'images' | readonly string[];

export interface ArgSpec {
  name: string;
  variadic?: boolean;
  required?: boolean;
  complete?: Completer;
}

export interface OptionSpec {
  flags: string; // commander syntax, e.g. "-e, --env <KEY=VALUE>"
  description: string;
  repeatable?: boolean;
  complete?: Completer;
}

export interface CommandSpec {
  name: string;
  summary: string;
  /** Module under src/cli/commands/ that exports run(); loaded only when the command runs. */
  module?: string;
  args?: ArgSpec[];
  options?: OptionSpec[];
  subcommands?: CommandSpec[];
  hidden?: boolean;
  /** Everything after "--" is the command to run. */
  dashDash?: boolean;
}

export const SHELLS = ['bash', 'zsh', 'fish'] as const;

const json: OptionSpec = { flags: '--json', description: 'print JSON for scripts' };
const sandboxArg: ArgSpec = { name: 'sandbox', complete: 'sandboxes' };
const sandboxesArg: ArgSpec = { name: 'sandbox', variadic: true, complete: 'sandboxes' };

export const COMMANDS: CommandSpec[] = [
  {
    name: 'create',
    summary: 'create and start a sandbox',
    module: 'create',
    dashDash: true,
    options: [
      { flags: '--name <name>', description: 'sandbox name: [a-z0-9][a-z0-9-]{0,62} (default: generated)' },
      { flags: '--image <image>', description: 'local image to run (default: sbx/base:bookworm)', complete: 'images' },
      { flags: '-e, --env <KEY=VALUE>', description: 'set an environment variable (repeatable)', repeatable: true },
      { flags: '--memory <size>', description: 'memory limit, e.g. 512m or 1g' },
      { flags: '--cpus <n>', description: 'CPU limit, e.g. 1.5' },
      json,
    ],
  },
  {
    name: 'ls',
    summary: 'list sandboxes',
    module: 'ls',
    options: [json, { flags: '-q, --quiet', description: 'print ids only' }],
  },
  { name: 'inspect', summary: 'show one sandbox in detail', module: 'inspect', args: [sandboxArg], options: [json] },
  { name: 'start', summary: 'start stopped sandboxes', module: 'lifecycle', args: [sandboxesArg], options: [json] },
  { name: 'stop', summary: 'stop running sandboxes', module: 'lifecycle', args: [sandboxesArg], options: [json] },
  { name: 'pause', summary: 'freeze sandboxes (processes keep their state)', module: 'lifecycle', args: [sandboxesArg], options: [json] },
  { name: 'resume', summary: 'thaw paused sandboxes', module: 'lifecycle', args: [sandboxesArg], options: [json] },
  {
    name: 'rm',
    summary: 'remove sandboxes and everything they own',
    module: 'rm',
    args: [sandboxesArg],
    options: [{ flags: '-f, --force', description: 'remove running sandboxes too; succeed if already gone' }, json],
  },
  {
    name: 'exec',
    summary: 'run a command in a sandbox',
    module: 'exec',
    dashDash: true,
    args: [sandboxArg],
    options: [
      { flags: '-i, --interactive', description: 'forward stdin to the command' },
      { flags: '-t, --tty', description: 'allocate a terminal' },
      { flags: '-d, --detach', description: 'leave the command running in the background' },
      { flags: '-e, --env <KEY=VALUE>', description: 'set an environment variable (repeatable)', repeatable: true },
      { flags: '-w, --workdir <dir>', description: 'working directory inside the sandbox' },
    ],
  },
  {
    name: 'image',
    summary: 'manage sandbox images',
    subcommands: [
      {
        name: 'build',
        summary: 'build the default image (debootstrap, no registry needed)',
        module: 'image-build',
        options: [
          { flags: '--tag <image>', description: 'image name to build (default: sbx/base:bookworm)' },
          { flags: '--mirror <url>', description: 'Debian mirror (default: the one apt uses)' },
          { flags: '--force', description: 'rebuild even when the image exists' },
          json,
        ],
      },
    ],
  },
  {
    name: 'completion',
    summary: 'print the shell completion script',
    module: 'completion',
    args: [{ name: 'shell', required: true, complete: SHELLS }],
  },
  {
    name: '__complete',
    summary: 'values for shell completion',
    module: 'complete',
    hidden: true,
    args: [{ name: 'kind', required: true, complete: ['sandboxes', 'images'] }],
  },
];
