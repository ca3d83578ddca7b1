#!/usr/bin/env bash
# The cost of sbx's egress rules per packet with 1 and with 1,000 sandboxes' rules (bench/rules.ts).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export SBX_GATEWAY_PORT=0
node "$ROOT/bench/rules.ts"
