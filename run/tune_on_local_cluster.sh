#!/usr/bin/env bash
# Runnable example: a sweep on a two-node Ray cluster on this machine (loopback), the same way
# one joins a real cluster: start a head node, add a worker node, point run_tune at the head with
# --address (or RAY_ADDRESS). Usage: bash run/tune_on_local_cluster.sh [sweep file] [run_tune flags…]
set -euo pipefail
cd "$(dirname "$0")/.."
RAY=.venv/bin/ray
SPACE="${1:-yaml/tune/hymoerec-experts.yaml}"; shift || true
PORT="${RAY_PORT:-6390}"
export RAY_memory_monitor_refresh_ms=0
# Ray >= 2.59 secures clusters with a token; both nodes and the driver use the one in ~/.ray/auth_token.
export RAY_AUTH_MODE=token
trap '"$RAY" stop --force >/dev/null 2>&1 || true' EXIT
"$RAY" start --head --port="$PORT" --num-cpus=1 --include-dashboard=false --disable-usage-stats >/dev/null
"$RAY" start --address="127.0.0.1:$PORT" --num-cpus=1 >/dev/null   # the second node
"$RAY" status | sed -n '1,12p'
.venv/bin/run_tune --space="$SPACE" --address="127.0.0.1:$PORT" --out="results/tune/$(basename "$SPACE" .yaml)-cluster" "$@"
