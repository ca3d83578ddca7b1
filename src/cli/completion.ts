// Shell completion scripts generated from the command tree (spec.ts). Dynamic values (sandbox
// names, local images) are asked of sbx itself through the hidden `__complete` command.
import { COMMANDS, type CommandSpec, type Completer, type OptionSpec, type SHELLS } from './spec.ts';

type Shell = (typeof SHELLS)[number];

interface Node {
  path: string[];
  spec: CommandSpec;
}

/** Every command in the tree with its path, root first. */
function walk(specs: CommandSpec[], path: string[] = []): Node[] {
  return specs
    .filter((s) => !s.hidden)
    .flatMap((s) => [{ path: [...path, s.name], spec: s }, ...walk(s.subcommands ?? [], [...path, s.name])]);
}

function flagNames(o: OptionSpec): string[] {
  return o.flags.split(/[ ,|]+/).filter((f) => f.startsWith('-'));
}

const takesValue = (o: OptionSpec) => /[<[]/.test(o.flags);

function shellWords(c: Completer | undefined, sbxCall: (kind: string) => string): string {
  if (!c) return '';
  return typeof c === 'string' ? sbxCall(c) : c.join(' ');
}

const HEADER = '# sbx shell completion, generated from the command tree: regenerate, do not edit.\n';

function bash(): string {
  const nodes = walk(COMMANDS);
  const root = COMMANDS.filter((c) => !c.hidden).map((c) => c.name).join(' ');
  const call = (kind: string) => `$(sbx __complete ${kind} 2>/dev/null)`;
  const arms = nodes.map(({ path, spec }) => {
    const opts = [...(spec.options ?? []), { flags: '-h, --help', description: '' }];
    const valueArms = opts
      .filter(takesValue)
      .map((o) => `        ${flagNames(o).join('|')}) COMPREPLY=($(compgen -W "${shellWords(o.complete, call)}" -- "$cur")); return ;;`)
      .join('\n');
    const subs = (spec.subcommands ?? []).map((s) => s.name).join(' ');
    const pos = shellWords(spec.args?.[0]?.complete, call);
    return [
      `    "${path.join(' ')}")`,
      `      flags="${opts.flatMap(flagNames).join(' ')}"; subs="${subs}"; pos="${pos}"`,
      valueArms ? `      case "$prev" in\n${valueArms}\n      esac` : '',
      '      ;;',
    ].filter(Boolean).join('\n');
  });
  return `${HEADER}_sbx() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="\${COMP_WORDS[COMP_CWORD-1]}" cmd="" w i flags="" subs="" pos=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    # After "--" comes a command to run in the sandbox: complete files as usual.
    if [[ "$w" == "--" ]]; then compopt -o default 2>/dev/null; COMPREPLY=(); return; fi
    case "\${cmd:+$cmd }$w" in
${nodes.map((n) => `      "${n.path.join(' ')}") cmd="${n.path.join(' ')}" ;;`).join('\n')}
    esac
  done
  case "$cmd" in
    "") flags="-h --help -v --version"; subs="${root}" ;;
${arms.join('\n')}
  esac
  if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [[ -n "$subs" ]]; then COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  else COMPREPLY=($(compgen -W "$pos" -- "$cur"))
  fi
}
complete -F _sbx sbx
`;
}

function zsh(): string {
  // zsh runs the same engine through bashcompinit, so the two can never disagree.
  return `#compdef sbx\n${HEADER}autoload -U +X bashcompinit && bashcompinit\n${bash().slice(HEADER.length)}`;
}

function fish(): string {
  const lines = [HEADER.trimEnd(), 'complete -c sbx -f'];
  const q = (s: string) => `'${s.replace(/'/g, "\\'")}'`;
  const call = (kind: string) => `(sbx __complete ${kind} 2>/dev/null)`;
  for (const { path, spec } of walk(COMMANDS)) {
    const parent = path.slice(0, -1);
    const siblings = (parent.length ? walk(COMMANDS).find((n) => n.path.join(' ') === parent.join(' '))!.spec.subcommands! : COMMANDS)
      .filter((s) => !s.hidden)
      .map((s) => s.name);
    const cond = parent.length
      ? `__fish_seen_subcommand_from ${parent.join(' ')}; and not __fish_seen_subcommand_from ${siblings.join(' ')}`
      : `not __fish_seen_subcommand_from ${siblings.join(' ')}`;
    lines.push(`complete -c sbx -n ${q(cond)} -a ${spec.name} -d ${q(spec.summary)}`);
    const here = `__fish_seen_subcommand_from ${path.join(' ')}`;
    const inCmd = path.length > 1 ? `__fish_seen_subcommand_from ${path[0]}; and ${here.replace(path.join(' '), path[path.length - 1]!)}` : here;
    for (const o of spec.options ?? []) {
      const short = flagNames(o).find((f) => /^-[^-]$/.test(f));
      const long = flagNames(o).find((f) => f.startsWith('--'));
      const parts = [`complete -c sbx -n ${q(inCmd)}`];
      if (short) parts.push(`-s ${short.slice(1)}`);
      if (long) parts.push(`-l ${long.slice(2)}`);
      if (takesValue(o)) parts.push(o.complete ? `-x -a ${q(shellWords(o.complete, call))}` : '-x');
      parts.push(`-d ${q(o.description)}`);
      lines.push(parts.join(' '));
    }
    const pos = shellWords(spec.args?.[0]?.complete, call);
    if (pos) lines.push(`complete -c sbx -n ${q(inCmd)} -a ${q(pos)}`);
  }
  return lines.join('\n') + '\n';
}

export function renderCompletion(shell: Shell): string {
  return shell === 'bash' ? bash() : shell === 'zsh' ? zsh() : fish();
}
