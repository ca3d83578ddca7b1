#!/usr/bin/env bash
# create + rm against an engine in another network namespace, through the agent (bench/remote.ts).
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
use_project_node
exec node "$ROOT/bench/remote.ts"
