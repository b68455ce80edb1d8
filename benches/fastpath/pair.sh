#!/usr/bin/env bash
# Paired A/B of two rollgate gateways, each a build and a config: "plain" (one model, the
# comparison's fast upstream) or "mirror" (the same, plus `shadow: { sample: 100% }` at weight
# 0 % to a shadow that answers 50 ms later, the default in-flight bound). It is how session 11
# priced a slow shadow's mirrors (docs/fastpath.md, "Session 11") and tested changes to them.
#
# Both gateways (`workers: 1`) and the upstream (benches/compare/upstream-nginx.conf) run on
# CPU 0, `rollgate loadtest --compare A B` on CPU 1 in alternating 250 ms slices, the order
# alternating run by run, as benches/compare/run's `paired` does. The shadow is nginx with the
# echo module (benches/compare/shadow-nginx-echo.conf; SHADOW=sim for `rollgate sim`, whose
# added latency SHADOW_DELAY sets, default 50ms) on $SHADOW_CPU (default 1). MAX_INFLIGHT
# sets the mirror's `max_inflight` (default: the config's default bound), SATURATED_SAMPLE its
# `saturated_sample` (default 1 %: a saturated gateway, as here, sheds 99 % of the sample; `100%`
# measures what every mirror the bound admits costs). Needs nginx, its echo
# module and curl (benches/compare/run installs them). Per run it prints B's throughput,
# total-latency p99 and gateway CPU per request over A's (`report.py loadtest-pair`), then B's
# mirror drops.
#
# Usage: benches/fastpath/pair.sh BIN_A CONF_A BIN_B CONF_B [RUNS] [SECONDS]
#   CONF_*: plain or mirror.  LOAD="--rate 20000 --connections 64" for a fixed rate (compare
#   CPU per request below saturation); default closed loop, 64 connections.
#   SLICE sets the length of each side's turn (default 250ms), WARMUP the warm-up (default 1s):
#   keep it an even number of slices, or A's CPU pays for warm-up requests B's does not.
#   PERF=1 records each gateway with `perf record -g` per run (files in the printed directory).
# Examples: the cost of mirroring,   pair.sh target/release/rollgate plain target/release/rollgate mirror 8 10
#           a change to the mirrors, pair.sh /tmp/old mirror target/release/rollgate mirror 8 10
# Run it with plain against plain first: on the 2-core VM single 10 s runs read 0.94-1.10.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
COMPARE="$HERE/../compare"
BA=$1 CA=$2 BB=$3 CB=$4 RUNS=${5:-6} SECS=${6:-10}
D=$(mktemp -d /tmp/pair.XXXX)
fp() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
UP=$(fp) UP2=$(fp) SHADOW_PORT=$(fp) PA=$(fp) PB=$(fp) AA=$(fp) AB=$(fp)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; }
trap cleanup EXIT
mkdir -p "$D/tmp" "$D/sh/tmp"
sed -e "s#@DIR@#$D#g" -e "s#@PORT_A@#$UP#g" -e "s#@PORT_B@#$UP2#g" \
    "$COMPARE/upstream-nginx.conf" >"$D/up.conf"
taskset -c 0 nginx -e "$D/up.err" -p "$D" -c "$D/up.conf" & pids+=($!)
if [ "${SHADOW:-echo}" = echo ]; then
    sed -e "s#@DIR@#$D/sh#g" -e "s#@PORT@#$SHADOW_PORT#g" \
        "$COMPARE/shadow-nginx-echo.conf" >"$D/sh.conf"
    taskset -c "${SHADOW_CPU:-1}" nginx -e "$D/sh/err.log" -p "$D/sh" -c "$D/sh.conf" & pids+=($!)
else
    taskset -c "${SHADOW_CPU:-1}" "$BA" sim --listen "127.0.0.1:$SHADOW_PORT" --model m \
        --ttft 0ms --tpot 0ms --output-tokens 1 --extra-latency "${SHADOW_DELAY:-50ms}" --max-concurrency 4096 \
        >"$D/sim.log" 2>&1 & pids+=($!)
fi
conf() { # CONF PORT ADMIN_PORT
    printf 'listen: 127.0.0.1:%s\nadmin: { listen: 127.0.0.1:%s }\nworkers: 1\nmodels:\n' "$2" "$3"
    printf '  - name: m\n    default: true\n    stable: { endpoints: ["http://127.0.0.1:%s"] }\n' "$UP"
    if [ "$1" = mirror ]; then
        printf '    candidate: { endpoints: ["http://127.0.0.1:%s"] }\n' "$SHADOW_PORT"
        printf '    weight: 0%%\n    shadow: { sample: 100%%%s%s }\n' "${MAX_INFLIGHT:+, max_inflight: $MAX_INFLIGHT}" \
            "${SATURATED_SAMPLE:+, saturated_sample: $SATURATED_SAMPLE}"
    fi
}
conf "$CA" "$PA" "$AA" >"$D/a.yaml"
conf "$CB" "$PB" "$AB" >"$D/b.yaml"
taskset -c 0 "$BA" run --config "$D/a.yaml" >"$D/a.log" 2>&1 & pids+=($!); PIDA=$!
taskset -c 0 "$BB" run --config "$D/b.yaml" >"$D/b.log" 2>&1 & pids+=($!); PIDB=$!
for p in $UP $SHADOW_PORT $PA $PB; do
    for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done
done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
for run in $(seq 1 "$RUNS"); do
    first=$PA second=$PB order=ab
    [ $((run % 2)) = 0 ] && { first=$PB second=$PA order=ba; }
    a0=$(ticks $PIDA) b0=$(ticks $PIDB)
    if [ -n "${PERF:-}" ]; then
        perf record -F 2999 -g -p $PIDA -o "$D/a$run.data" >/dev/null 2>&1 & pa=$!
        perf record -F 2999 -g -p $PIDB -o "$D/b$run.data" >/dev/null 2>&1 & pb=$!
    fi
    # shellcheck disable=SC2086 # LOAD is a list of flags
    taskset -c 1 "$BA" loadtest ${LOAD:---connections 64} --slice "${SLICE:-250ms}" --warmup "${WARMUP:-1s}" \
        --duration "${SECS}s" --model m --prompt-tokens 1 --max-tokens 1 -q --json \
        --compare "http://127.0.0.1:$first/v1/chat/completions" \
        "http://127.0.0.1:$second/v1/chat/completions" >"$D/r$run.json" 2>"$D/r$run.err"
    a1=$(ticks $PIDA) b1=$(ticks $PIDB)
    if [ -n "${PERF:-}" ]; then kill -INT $pa $pb; wait $pa $pb; fi
    echo "run $run: rps ×, p99 ×, cpu/req ×, Δp50 µs, Δp99 µs (B over A):" \
        "$(python3 "$COMPARE/lib/report.py" loadtest-pair "$D/r$run.json" $order $((a1 - a0)) $((b1 - b0)))"
done
curl -s "http://127.0.0.1:$AB/metrics" | grep -E '^rollgate_proxy_shadow_dropped_total.*(inflight|paced|saturated)|^rollgate_proxy_requests_total.*variant="shadow"'
echo "files in $D"
