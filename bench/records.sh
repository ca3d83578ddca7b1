#!/usr/bin/env bash
# sbx's own work with 1,000 sandboxes' records (RECORDS), without 1,000 containers slowing the
# machine: one real sandbox, the others records only (bench/records.ts). A minute or two; a quick
# check of what a change does at scale before bench/scale.sh.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dpkg -s wrk >/dev/null 2>&1 || { step "installing wrk"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2; }
export SBX_GATEWAY_PORT=0
node "$ROOT/bench/records.ts"
