#!/usr/bin/env bash
# The time of sbx's nft runs among 10 and among 1,000 sandboxes' rules (bench/nft-runs.ts).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
node "$ROOT/bench/nft-runs.ts"
