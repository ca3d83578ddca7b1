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
// The egress lists, shared by `create` and `network update` (repeatable; commas split too).
const egressLists: OptionSpec[] = [
  { flags: '--allow-out <dest>', description: 'allow an address, CIDR, domain, *.domain or all (repeatable)', repeatable: true },
  { flags: '--deny-out <dest>', description: 'deny an address, CIDR, domain, *.domain or all (repeatable)', repeatable: true },
  { flags: '--allow-port <port>', description: 'allow a destination port or range, e.g. 443 or 8000-8100 (repeatable)', repeatable: true },
  { flags: '--deny-port <port>', description: 'deny a destination port or range (repeatable)', repeatable: true },
];

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
      { flags: '--pids-limit <n>', description: 'most processes at once, 16 to 4194304 (default 1024)' },
      { flags: '-p, --port <port>', description: 'expose a port behind a URL (repeatable)', repeatable: true },
      { flags: '--private', description: 'exposed ports require the traffic token' },
      { flags: '--mask-host <template>', description: "Host header sent into the sandbox, e.g. 'localhost:${PORT}'" },
      { flags: '--ttl <duration>', description: 'remove the sandbox after this long, e.g. 30s, 10m, 2h' },
      { flags: '--ipv6', description: 'give the sandbox IPv6 too (a unique-local /64; the egress policy covers it)' },
      { flags: '--block-network', description: 'egress mode block-all: only --allow-out/--allow-port pass' },
      { flags: '--no-internet', description: 'the same as --block-network' },
      ...egressLists,
      json,
    ],
  },
  {
    name: 'ls',
    summary: 'list sandboxes',
    module: 'ls',
    options: [json, { flags: '-q, --quiet', description: 'print ids only' }],
  },
  { name: 'inspect', summary: 'show one sandbox in detail', module: 'inspect', args: [sandboxArg], options: [{ flags: '--show-token', description: 'include the traffic token' }, json] },
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
    name: 'port',
    summary: 'ports behind URLs',
    subcommands: [
      {
        name: 'expose',
        summary: 'route ports of a sandbox through the gateway and print their URLs',
        module: 'port-expose',
        args: [sandboxArg, { name: 'ports', variadic: true }],
        options: [
          { flags: '--public', description: 'anyone with the URL may connect (default)' },
          { flags: '--private', description: 'require the traffic token' },
          { flags: '--domain <name>', description: 'also route a name of your own (one port; it must resolve to the gateway)' },
          json,
        ],
      },
      { name: 'ls', summary: 'list the exposed ports of a sandbox', module: 'port-ls', args: [sandboxArg], options: [json] },
      { name: 'rm', summary: 'stop routing ports (at once)', module: 'port-rm', args: [sandboxArg, { name: 'ports', variadic: true }], options: [json] },
      {
        name: 'forward',
        summary: 'forward a local TCP port to a sandbox port, any protocol, until Ctrl-C',
        module: 'port-forward',
        args: [sandboxArg, { name: 'port' }],
        options: [{ flags: '--local <[addr:]port>', description: 'local address and port (default 127.0.0.1 and the same port)' }],
      },
    ],
  },
  {
    name: 'network',
    summary: 'outbound (egress) policy of a sandbox',
    subcommands: [
      { name: 'show', summary: "print a sandbox's egress policy", module: 'network', args: [sandboxArg], options: [json] },
      {
        name: 'update',
        summary: 'replace the whole egress policy (in force before this returns)',
        module: 'network',
        args: [sandboxArg],
        options: [{ flags: '--mode <mode>', description: 'allow-all (default) or block-all', complete: ['allow-all', 'block-all'] }, ...egressLists, json],
      },
      { name: 'block', summary: 'block all outbound traffic (block-all, no exceptions)', module: 'network', args: [sandboxArg], options: [json] },
      { name: 'unblock', summary: 'allow all outbound traffic (allow-all, no lists)', module: 'network', args: [sandboxArg], options: [json] },
      {
        name: 'log',
        summary: 'what the sandbox tried to reach, and the rule that let it through or refused it',
        module: 'network-log',
        args: [sandboxArg],
        options: [
          { flags: '-f, --follow', description: 'print new entries as they come, until Ctrl-C' },
          { flags: '--since <duration>', description: 'only entries this recent (30s, 5m, 2h)' },
          { flags: '--blocked', description: 'refusals only' },
          { flags: '--json', description: 'one JSON object per line, for scripts' },
        ],
      },
      {
        name: 'check',
        summary: 'would a connection pass now, and by which rule (exit 0 allowed, 1 refused)',
        module: 'network-check',
        args: [sandboxArg, { name: 'destination' }],
        options: [{ flags: '--udp', description: 'check UDP instead of TCP' }, json],
      },
    ],
  },
  {
    name: 'token',
    summary: "print a sandbox's traffic token",
    module: 'token',
    args: [sandboxArg],
    options: [{ flags: '--rotate', description: 'replace it; the old one stops working at once' }, json],
  },
  {
    name: 'fetch',
    summary: 'send one HTTP request to a sandbox port through the gateway',
    module: 'fetch',
    args: [sandboxArg, { name: 'port' }, { name: 'path' }],
    options: [
      { flags: '-X, --method <method>', description: 'HTTP method (default GET, or POST with -d)' },
      { flags: '-H, --header <K: V>', description: 'request header (repeatable)', repeatable: true },
      { flags: '-d, --data <data>', description: 'request body (@file reads a file, @- stdin)' },
      { flags: '-i, --include', description: 'print the status line and headers too' },
      { flags: '--http2', description: 'send it as HTTP/2 (prior knowledge; by ALPN on an HTTPS gateway)' },
    ],
  },
  {
    name: 'gateway',
    summary: 'the gateway that serves sandbox URLs',
    subcommands: [
      { name: 'run', summary: 'run the gateway in the foreground', module: 'gateway' },
      { name: 'start', summary: 'start the gateway in the background', module: 'gateway', options: [json] },
      { name: 'stop', summary: 'stop the background gateway', module: 'gateway', options: [json] },
      { name: 'status', summary: 'is the gateway running, and where', module: 'gateway', options: [json] },
    ],
  },
  { name: 'ca', summary: "print the path of sbx's certificate authority (HTTPS URLs) and how to trust it; installs nothing", module: 'ca', options: [json] },
  {
    name: 'pool',
    summary: 'the warm pool of running sandboxes that create claims',
    subcommands: [
      { name: 'set', summary: 'keep N sandboxes ready (0 turns the pool off)', module: 'pool', args: [{ name: 'size', required: true }], options: [json] },
      { name: 'status', summary: 'the pool\'s size and how many sandboxes are ready', module: 'pool', options: [json] },
    ],
  },
  {
    name: 'image',
    summary: 'manage sandbox images',
    subcommands: [
      {
        name: 'build',
        summary: 'build the default image and the agent images (debootstrap, no registry needed)',
        module: 'image-build',
        options: [
          { flags: '--tag <image>', description: 'name of the default image (default: sbx/base:bookworm)' },
          { flags: '--mirror <url>', description: 'Debian mirror (default: the one apt uses)' },
          { flags: '--force', description: 'rebuild even when the images exist' },
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
    // Run by sbx inside the agent container (src/runtime/agent.ts), not by people.
    name: 'agent',
    summary: 'the sbx agent on an engine\'s host',
    hidden: true,
    subcommands: [
      { name: 'run', summary: 'run the agent daemon (in the agent container)', module: 'agent' },
      { name: 'pipe', summary: 'join stdin and stdout to the agent\'s control socket', module: 'agent' },
    ],
  },
  {
    name: '__complete',
    summary: 'values for shell completion',
    module: 'complete',
    hidden: true,
    args: [{ name: 'kind', required: true, complete: ['sandboxes', 'images'] }],
  },
];
