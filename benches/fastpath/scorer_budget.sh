#!/usr/bin/env bash
# The shadow scorer's share of the gateway's core with long streamed answers: two `rollgate sim`
# (stable and candidate, 500-token streams, no delay) on CPU 1, the gateway (`workers: 1`,
# every request mirrored) on CPU 0, `rollgate loadtest --stream --max-tokens 500 -c 32` for 10 s
# on CPU 1. Prints the load's rate, the CPU time (clock ticks) of the gateway's busiest threads —
# the worker and the control runtime's threads, where the scorer runs — and the shadow and
# unscored-pair counters. With the scoring budget (`SCORE_BUDGET`, docs/fastpath.md
# "Session 14") the control threads stay near 5 % of the run and the pairs past it are counted
# unscored; without it they took ≈ 14 % here and every pair was scored.
#
# Usage: benches/fastpath/scorer_budget.sh [ROLLGATE_BIN]   (default target/release/rollgate)
set -u
BIN=${1:-target/release/rollgate}
D=$(mktemp -d /tmp/scorer-budget.XXXX)
fp() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
S=$(fp) C=$(fp) RG=$(fp) AD=$(fp)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
for p in "$S" "$C"; do
    taskset -c 1 "$BIN" sim --listen "127.0.0.1:$p" --model m --ttft 0ms --tpot 0ms \
        --output-tokens 500 --max-concurrency 4096 >"$D/sim-$p.log" 2>&1 & pids+=($!)
done
cat >"$D/rollgate.yaml" <<C
listen: 127.0.0.1:$RG
admin: { listen: 127.0.0.1:$AD }
workers: 1
models:
  - name: m
    default: true
    stable: { endpoints: ["http://127.0.0.1:$S"], engine: vllm }
    candidate: { endpoints: ["http://127.0.0.1:$C"], engine: vllm }
    weight: 0%
    shadow: { sample: 100%, saturated_sample: 100% }
C
taskset -c 0 "$BIN" run --config "$D/rollgate.yaml" >"$D/rollgate.log" 2>&1 & pids+=($!)
GW=$!
for p in "$S" "$C" "$RG"; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/v1/models" && break; sleep 0.1; done
done
taskset -c 1 "$BIN" loadtest --quiet --stream --max-tokens 500 -c 32 -d 10s --model m \
    "http://127.0.0.1:$RG" | grep -E '^ *requests'
for t in /proc/"$GW"/task/*; do
    echo "thread $(cat "$t/comm"): $(awk '{print $14 + $15}' "$t/stat") ticks"
done | sort -t: -k2 -n | tail -3
curl -s "http://127.0.0.1:$AD/metrics" |
    grep -E '^rollgate_proxy_shadow_pairs_unscored_total|^rollgate_proxy_requests_total\{.*variant="shadow",status_class="2xx"'
