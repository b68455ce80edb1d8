#!/usr/bin/env bash
# RSS per idle keep-alive connection and per active SSE stream, for one rollgate data plane.
# usage: benches/fastpath/memory.sh ROLLGATE_BIN fast|hyper [IDLE_N] [SSE_N]
set -euo pipefail
BIN=$1 DP=$2 IDLE=${3:-4000} SSE=${4:-1000}
D=$(mktemp -d /tmp/fastpath-mem.XXXX)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$BIN" sim --listen 127.0.0.1:18191 --model m --max-concurrency 20000 --max-queue 20000 \
  --ttft 1ms --tpot 2s --output-tokens 60 >"$D/sim.log" 2>&1 & SIM=$!
cat > "$D/rg.yaml" <<C
listen: 127.0.0.1:18193
admin: { listen: 127.0.0.1:18194 }
workers: 1
data_plane: $DP
models:
  - name: m
    default: true
    stable: { endpoints: ["http://127.0.0.1:18191"], engine: vllm }
C
"$BIN" run --config "$D/rg.yaml" >"$D/rg.log" 2>&1 & RG=$!
trap 'kill $RG $SIM 2>/dev/null; wait 2>/dev/null' EXIT
for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18193/v1/models && break; sleep 0.1; done
# The worker thread's RSS is the process's; measure deltas.
python3 "$(dirname "$0")/memory.py" "$RG" 127.0.0.1:18193 "$IDLE" idle
python3 "$(dirname "$0")/memory.py" "$RG" 127.0.0.1:18193 "$SSE" sse
