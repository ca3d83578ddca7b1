# Shared helpers for the scripts in this folder (sourced, not run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_NODE="$ROOT/.tools/node_modules/node/bin"
if [ -t 2 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1m'; G=$'\033[32m'; R=$'\033[31m'; N=$'\033[0m'; else B=; G=; R=; N=; fi
step() { printf '%s==> %s%s\n' "$B" "$*" "$N" >&2; }
ok() { printf '%s✓%s %s\n' "$G" "$N" "$*" >&2; }
die() { printf '%serror:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }
# Use the project's own Node when setup provisioned one (call again after running setup).
use_project_node() {
  if [ -x "$TOOLS_NODE/node" ]; then case ":$PATH:" in *":$TOOLS_NODE:"*) ;; *) export PATH="$TOOLS_NODE:$PATH" ;; esac; fi
}
use_project_node
export PATH="$ROOT/bin:$PATH"
