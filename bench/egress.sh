#!/usr/bin/env bash
# Egress: the cost of sbx's rules, DNS forwarder and Host/SNI proxy (see bench/egress.ts), against
# a fake internet in a network namespace (test/fake-internet.ts): no traffic leaves the machine.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export SBX_GATEWAY_PORT=0
node "$ROOT/bench/egress.ts"
