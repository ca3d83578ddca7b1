#!/usr/bin/env bash
# sbx with N sandboxes (default 1,000), then the same figures with 1 once the others are removed, in
# one run (bench/scale.ts).
# Needs about 15 MiB of host memory per sandbox and a while: SANDBOXES=100 for a quick look. Each
# figure is taken once the machine is idle (1-minute load under SETTLE_LOAD=1, at most SETTLE_MAX=300 s).
# HOLD=FILE keeps the N sandboxes after their figures until FILE is deleted; REUSE=1 with that SBX_HOME
# measures them again (another build, say) without creating them, then goes on as usual.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dpkg -s wrk >/dev/null 2>&1 || { step "installing wrk"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2; }
export SBX_GATEWAY_PORT=0
node "$ROOT/bench/scale.ts"
