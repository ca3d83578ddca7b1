#!/usr/bin/env bash
# The gateway's nginx alone, with the configuration sbx writes: RPS to one route when nginx holds
# 1 route, then 1,000 with that route's block first, then last (bench/nginx-routes.ts). No Docker.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
dpkg -s wrk >/dev/null 2>&1 || { step "installing wrk"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >&2; }
node "$ROOT/bench/nginx-routes.ts"
