#!/usr/bin/env bash
# Quick, noise-robust per-request cost of rollgate vs nginx as a reverse proxy.
#
# Both proxies get one worker and share core $PROXY_CPU with the upstream (nginx `return 200` with
# a small chat-completion JSON, as in benches/compare, so a mirror's pair is scored as in use);
# the load generator runs on core $LOAD_CPU. Reported per request:
#   cpu_us  - the proxy's user+system CPU time (from /proc/<pid>/stat) / requests
#   user_us - the user-space part of it
#   Ir      - (MODE=callgrind) user-space instructions executed by the proxy / requests
#   syscalls, ctxsw - system calls and context switches of the proxy / requests
#   rps     - wall-clock rate (noisy on a shared machine; for orientation only)
#
# Usage: benches/fastpath/measure.sh [ROLLGATE_BIN] [REQUESTS]
#   MODE=cpu (default), MODE=callgrind, or MODE=clock (rollgate only: clock reads per request,
#   counted by the LD_PRELOAD shim clock_count.c);  BODY=1 sends a small JSON chat POST instead of GET,
#   BODY=65536 a JSON POST of 64 KiB (MODEL_LAST=1: `model` after the 64 KiB string, so
#   rollgate reads the whole body before it routes it; with BODY=1, the small chat body with its
#   keys sorted, `model` last, as `rollgate loadtest` sends it and hand-built bodies often have it).
#   PERF=1 writes a flat profile of each proxy to /tmp/perf.<name>.txt.
#   ROLLGATE_EXTRA="data_plane: hyper" adds top-level config lines; MODEL_EXTRA adds lines to
#   the model (indented 4 spaces: a candidate, weight, shadow); ONLY=rollgate skips nginx.
#   URL_PATH=/v1/chat/completions requests that path (default /; a simulator as candidate
#   answers / with a quick 404, so a slow-shadow test needs the chat path).
set -euo pipefail
BIN=${1:-${CARGO_TARGET_DIR:-target}/release/rollgate}
N=${2:-200000}
MODE=${MODE:-cpu}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CONNS=${CONNS:-64}
UP=18181 NGX=18182 RG=18183 RGA=18184
D=$(mktemp -d /tmp/fastpath-measure.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

cat > "$D/up.conf" <<C
daemon off; master_process off; worker_processes 1; error_log $D/up.err; pid $D/up.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP; location / { default_type application/json;
    return 200 '{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}'; } } }
C
cat > "$D/ngx.conf" <<C
daemon off; master_process off; worker_processes 1; error_log $D/ngx.err; pid $D/ngx.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$UP; keepalive 128; }
  server { listen 127.0.0.1:$NGX; location / { proxy_pass http://up; proxy_http_version 1.1;
    proxy_set_header Connection ""; } } }
C
cat > "$D/rg.yaml" <<C
listen: 127.0.0.1:$RG
admin: { listen: 127.0.0.1:$RGA }
workers: 1
${ROLLGATE_EXTRA:-}
models:
  - name: m
    default: true
    stable: { endpoints: ["http://127.0.0.1:$UP"], engine: vllm }
${MODEL_EXTRA:-}
C
taskset -c "$PROXY_CPU" nginx -c "$D/up.conf" -p "$D" & pids+=($!)
VG=()
[ "$MODE" = callgrind ] && VG=(valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$D/cg.%p")
taskset -c "$PROXY_CPU" "${VG[@]}" nginx -c "$D/ngx.conf" -p "$D" 2>"$D/ngx.vg" & pids+=($!); NGX_PID=$!
PRELOAD=()
if [ "$MODE" = clock ]; then
  ONLY=rollgate
  cc -shared -fPIC -O2 -o "$D/clock_count.so" "$(dirname "$0")/clock_count.c" -ldl
  PRELOAD=(env LD_PRELOAD="$D/clock_count.so")
fi
taskset -c "$PROXY_CPU" "${VG[@]}" "${PRELOAD[@]}" "$BIN" run --config "$D/rg.yaml" >"$D/rg.log" 2>&1 & pids+=($!); RG_PID=$!
for p in $UP $NGX $RG; do
  for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done

load() { # url n
  if [ "${BODY:-0}" != 0 ]; then
    if [ "$BODY" = 1 ] && [ "${MODEL_LAST:-0}" = 1 ]; then
      # What `rollgate loadtest` sends (keys sorted): model last.
      printf '{"max_tokens":1,"messages":[{"content":"hi","role":"user"}],"model":"m"}' > "$D/body.json"
    elif [ "$BODY" = 1 ]; then
      printf '{"model":"m","messages":[{"role":"user","content":"hi"}]}' > "$D/body.json"
    else # BODY=<bytes>: a JSON body of about that size
      python3 -c "import sys; n=int(sys.argv[1]); a='a'*(n-20)
print(('{\"x\":\"' + a + '\",\"model\":\"m\"}') if sys.argv[2] == '1' else ('{\"model\":\"m\",\"x\":\"' + a + '\"}'), end='')" "$BODY" "${MODEL_LAST:-0}" > "$D/body.json"
    fi
    taskset -c "$LOAD_CPU" h2load --h1 -n "$2" -c "$CONNS" -m 1 -d "$D/body.json" \
      -H 'content-type: application/json' "$1"
  else
    taskset -c "$LOAD_CPU" h2load --h1 -n "$2" -c "$CONNS" -m 1 "$1"
  fi
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
measure() { # name pid port
  local name=$1 pid=$2 port=$3 out
  load "http://127.0.0.1:$port${URL_PATH:-/}" $((N / 10)) >/dev/null # warm up: pools, caches
  if [ "$MODE" = clock ]; then
    local c0 c1
    clocks() { kill -USR2 "$pid"; sleep 0.3; awk '/^clock_gettime:/ { m = $3 } END { print m }' "$D/rg.log"; }
    c0=$(clocks)
    out=$(load "http://127.0.0.1:$port${URL_PATH:-/}" "$N")
    c1=$(clocks)
    echo "$name clock_reads/req=$(awk -v a="$c0" -v b="$c1" -v n="$N" 'BEGIN{printf "%.2f", (b-a)/n}')" \
      "(monotonic clock_gettime calls of every thread over $N requests)"
  elif [ "$MODE" = callgrind ]; then
    callgrind_control -z "$pid" >/dev/null 2>&1
    out=$(load "http://127.0.0.1:$port${URL_PATH:-/}" "$N")
    callgrind_control -d "$pid" >/dev/null 2>&1; sleep 1
    local f; f=$(ls -t "$D"/cg."$pid"* | head -1)
    local ir; ir=$(grep -m1 '^summary:\|^totals:' "$f" | awk '{print $2}')
    echo "$name Ir/req=$((ir / N)) $(echo "$out" | grep -E 'succeeded|finished in' | tr -s ' ' | tr '\n' ' ')"
    cp "$f" "/tmp/cg.$name.out"
  else
    local t0 t1 u0 u1 rec="" st; t0=$(cpu_ticks "$pid"); u0=$(user_ticks "$pid")
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pid" -o "$D/stat.$name" \
      >/dev/null 2>&1 & st=$!
    if [ "${PERF:-0}" = 1 ]; then
      perf record -F 4999 -g -p "$pid" -o "$D/perf.$name" >/dev/null 2>&1 & rec=$!
    fi
    out=$(load "http://127.0.0.1:$port${URL_PATH:-/}" "$N")
    t1=$(cpu_ticks "$pid"); u1=$(user_ticks "$pid")
    kill -INT "$st"; wait "$st" || true
    local sys cs
    sys=$(awk -F, '/sys_enter/ {print $1}' "$D/stat.$name")
    cs=$(awk -F, '/context-switches/ {print $1}' "$D/stat.$name")
    if [ -n "$rec" ]; then
      kill -INT "$rec"; wait "$rec" || true
      perf report -i "$D/perf.$name" --no-children --percent-limit 0.7 --stdio -g none \
        > "/tmp/perf.$name.txt" 2>/dev/null || true
    fi
    local hz; hz=$(getconf CLK_TCK)
    local rps; rps=$(echo "$out" | awk '/finished in/ {print $4}')
    echo "$name cpu_us/req=$(awk -v t=$((t1 - t0)) -v hz="$hz" -v n="$N" 'BEGIN{printf "%.2f", t/hz*1e6/n}')" \
      "user_us/req=$(awk -v t=$((u1 - u0)) -v hz="$hz" -v n="$N" 'BEGIN{printf "%.2f", t/hz*1e6/n}')" \
      "syscalls/req=$(awk -v s="$sys" -v n="$N" 'BEGIN{printf "%.2f", s/n}')" \
      "ctxsw/req=$(awk -v s="$cs" -v n="$N" 'BEGIN{printf "%.3f", s/n}') rps=$rps" \
      "$(echo "$out" | grep -E '^requests:' | tr -s ' ' | cut -d' ' -f8-9)"
  fi
}
for _ in 1 2; do
  [ "${ONLY:-}" = rollgate ] || measure nginx "$NGX_PID" "$NGX"
  measure rollgate "$RG_PID" "$RG"
done
