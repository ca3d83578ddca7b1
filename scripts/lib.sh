# Shared helpers for the scripts in this folder (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The PATH of the caller's shell, before the lines below put this checkout first.
SBX_USER_PATH=${SBX_USER_PATH:-$PATH}
TOOLS_NODE="$ROOT/.tools/node_modules/node/bin"
if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1m'; G=$'\033[32m'; R=$'\033[31m'; N=$'\033[0m'; else B=; G=; R=; N=; fi
step() { printf '%s==> %s%s\n' "$B" "$*" "$N" >&2; }
ok() { printf '%s✓%s %s\n' "$G" "$N" "$*" >&2; }
die() { printf '%serror:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }
warn() { printf 'warning: %s\n' "$*" >&2; }

# sbx keeps its shared rules table (`inet sbx`) once made. What tests and benches made, they take
# when no sandbox has rules there (nothing else may use sbx on the machine meanwhile).
drop_idle_sbx_table() {
  if [ "$(id -u)" = 0 ] && nft list table inet sbx >/dev/null 2>&1 && ! nft list table inet sbx | grep -q 'chain egress_'; then
    nft delete table inet sbx
  fi
}

# Prints a command as it would be typed (arguments quoted where a shell needs it), then runs it:
# what is shown is exactly what runs.
show_and_run() {
  local shown='' a q="'"
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then shown+=" $a"; else shown+=" '${a//$q/$q\\$q$q}'"; fi
  done
  step "${shown# }"
  "$@"
}

# `sbx` on PATH: a link DIR/sbx to this checkout's bin/sbx, made only where none works (missing,
# or dangling because its checkout is gone, e.g. a CI clone); a working link, to this checkout or
# another, is left alone. Says which sbx a shell runs.
link_sbx() {
  local dir=$1 link="$1/sbx" target="$ROOT/bin/sbx"
  if [ -L "$link" ] && [ -e "$link" ]; then
    if [ "$(readlink -f "$link")" = "$(readlink -f "$target")" ]; then
      ok "$link -> $target (this checkout)"
    else
      ok "$link -> $(readlink "$link") works: left alone (this checkout's is $target; to use it instead: ln -sfn $target $link)"
    fi
  elif [ -e "$link" ]; then
    warn "$link is not a link (left alone): this checkout's sbx is $target"
  else
    if [ -L "$link" ]; then step "$link pointed to $(readlink "$link"), which is gone: linking this checkout"; fi
    ln -sfn "$target" "$link"
    ok "linked $link -> $target"
  fi
  local used
  used=$(PATH=$SBX_USER_PATH command -v sbx || true)
  if [ -z "$used" ]; then
    warn "$dir is not on your PATH: add it, or run $target"
  elif [ "$used" != "$link" ]; then
    warn "your shell runs $used (earlier on PATH than $link)"
  fi
}
# Use the project's own Node when setup provisioned one (call again after running setup).
use_project_node() {
  if [ -x "$TOOLS_NODE/node" ]; then case ":$PATH:" in *":$TOOLS_NODE:"*) ;; *) export PATH="$TOOLS_NODE:$PATH" ;; esac; fi
}
use_project_node
export PATH="$ROOT/bin:$PATH"
