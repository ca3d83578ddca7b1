# sbx shell completion, generated from the command tree: regenerate, do not edit.
_sbx() {
  local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" cmd="" w i flags="" subs="" pos=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${COMP_WORDS[i]}"
    # After "--" comes a command to run in the sandbox: complete files as usual.
    if [[ "$w" == "--" ]]; then compopt -o default 2>/dev/null; COMPREPLY=(); return; fi
    case "${cmd:+$cmd }$w" in
      "create") cmd="create" ;;
      "ls") cmd="ls" ;;
      "inspect") cmd="inspect" ;;
      "start") cmd="start" ;;
      "stop") cmd="stop" ;;
      "pause") cmd="pause" ;;
      "resume") cmd="resume" ;;
      "rm") cmd="rm" ;;
      "exec") cmd="exec" ;;
      "port") cmd="port" ;;
      "port expose") cmd="port expose" ;;
      "port ls") cmd="port ls" ;;
      "port rm") cmd="port rm" ;;
      "port forward") cmd="port forward" ;;
      "network") cmd="network" ;;
      "network show") cmd="network show" ;;
      "network update") cmd="network update" ;;
      "network block") cmd="network block" ;;
      "network unblock") cmd="network unblock" ;;
      "network log") cmd="network log" ;;
      "network check") cmd="network check" ;;
      "token") cmd="token" ;;
      "fetch") cmd="fetch" ;;
      "gateway") cmd="gateway" ;;
      "gateway run") cmd="gateway run" ;;
      "gateway start") cmd="gateway start" ;;
      "gateway stop") cmd="gateway stop" ;;
      "gateway status") cmd="gateway status" ;;
      "ca") cmd="ca" ;;
      "pool") cmd="pool" ;;
      "pool set") cmd="pool set" ;;
      "pool status") cmd="pool status" ;;
      "image") cmd="image" ;;
      "image build") cmd="image build" ;;
      "completion") cmd="completion" ;;
    esac
  done
  case "$cmd" in
    "") flags="-h --help -v --version"; subs="create ls inspect start stop pause resume rm exec port network token fetch gateway ca pool image completion" ;;
    "create")
      flags="--name --image -e --env --memory --cpus --pids-limit -p --port --private --mask-host --ttl --ipv6 --block-network --no-internet --allow-out --deny-out --allow-port --deny-port --json -h --help"; subs=""; pos=""
      case "$prev" in
        --name) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --image) COMPREPLY=($(compgen -W "$(sbx __complete images 2>/dev/null)" -- "$cur")); return ;;
        -e|--env) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --memory) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --cpus) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --pids-limit) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        -p|--port) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --mask-host) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --ttl) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --allow-out) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --deny-out) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --allow-port) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --deny-port) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
      esac
      ;;
    "ls")
      flags="--json -q --quiet -h --help"; subs=""; pos=""
      ;;
    "inspect")
      flags="--show-token --json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "start")
      flags="--json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "stop")
      flags="--json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "pause")
      flags="--json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "resume")
      flags="--json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "rm")
      flags="-f --force --json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "exec")
      flags="-i --interactive -t --tty -d --detach -e --env -w --workdir -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      case "$prev" in
        -e|--env) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        -w|--workdir) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
      esac
      ;;
    "port")
      flags="-h --help"; subs="expose ls rm forward"; pos=""
      ;;
    "port expose")
      flags="--public --private --domain --json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      case "$prev" in
        --domain) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
      esac
      ;;
    "port ls")
      flags="--json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "port rm")
      flags="--json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "port forward")
      flags="--local -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      case "$prev" in
        --local) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
      esac
      ;;
    "network")
      flags="-h --help"; subs="show update block unblock log check"; pos=""
      ;;
    "network show")
      flags="--json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "network update")
      flags="--mode --allow-out --deny-out --allow-port --deny-port --json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      case "$prev" in
        --mode) COMPREPLY=($(compgen -W "allow-all block-all" -- "$cur")); return ;;
        --allow-out) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --deny-out) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --allow-port) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --deny-port) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
      esac
      ;;
    "network block")
      flags="--json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "network unblock")
      flags="--json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "network log")
      flags="-f --follow --since --blocked --json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      case "$prev" in
        --since) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
      esac
      ;;
    "network check")
      flags="--udp --json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "token")
      flags="--rotate --json -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      ;;
    "fetch")
      flags="-X --method -H --header -d --data -i --include --http2 -h --help"; subs=""; pos="$(sbx __complete sandboxes 2>/dev/null)"
      case "$prev" in
        -X|--method) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        -H|--header) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        -d|--data) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
      esac
      ;;
    "gateway")
      flags="-h --help"; subs="run start stop status"; pos=""
      ;;
    "gateway run")
      flags="-h --help"; subs=""; pos=""
      ;;
    "gateway start")
      flags="--json -h --help"; subs=""; pos=""
      ;;
    "gateway stop")
      flags="--json -h --help"; subs=""; pos=""
      ;;
    "gateway status")
      flags="--json -h --help"; subs=""; pos=""
      ;;
    "ca")
      flags="--json -h --help"; subs=""; pos=""
      ;;
    "pool")
      flags="-h --help"; subs="set status"; pos=""
      ;;
    "pool set")
      flags="--json -h --help"; subs=""; pos=""
      ;;
    "pool status")
      flags="--json -h --help"; subs=""; pos=""
      ;;
    "image")
      flags="-h --help"; subs="build"; pos=""
      ;;
    "image build")
      flags="--tag --mirror --force --json -h --help"; subs=""; pos=""
      case "$prev" in
        --tag) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
        --mirror) COMPREPLY=($(compgen -W "" -- "$cur")); return ;;
      esac
      ;;
    "completion")
      flags="-h --help"; subs=""; pos="bash zsh fish"
      ;;
  esac
  if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  elif [[ -n "$subs" ]]; then COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  else COMPREPLY=($(compgen -W "$pos" -- "$cur"))
  fi
}
complete -F _sbx sbx
