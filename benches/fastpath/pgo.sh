#!/usr/bin/env bash
# Profile-guided build of rollgate (an experiment, not the release build: docs/fastpath.md,
# "Session 13"). Builds an instrumented binary, trains it through one worker (small JSON POSTs,
# 64 KiB POSTs and GETs, 10 % mirrored, against the comparison's nginx upstream,
# benches/compare/upstream-nginx.conf; gateway and upstream on CPU 0, h2load on CPU 1), merges
# the profile and builds again with it. Needs nginx, h2load, curl and the llvm-profdata of
# rustc's LLVM major version (apt: llvm-NN).
#
# Usage: benches/fastpath/pgo.sh [DIR]   (default /tmp/rollgate-pgo; prints the binary's path)
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=$(realpath -m "${1:-/tmp/rollgate-pgo}")
LLVM=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
PROFDATA=$(command -v "llvm-profdata-$LLVM" || true)
[ -n "$PROFDATA" ] || { apt-get install -y "llvm-$LLVM" >/dev/null; PROFDATA=$(command -v "llvm-profdata-$LLVM"); }
rm -rf "$DIR/profiles" && mkdir -p "$DIR/profiles" "$DIR/train"
RUSTFLAGS="-Cprofile-generate=$DIR/profiles" CARGO_TARGET_DIR="$DIR/gen" \
    cargo build --release -p rollgate
rm -f "$DIR"/profiles/*.profraw # the build scripts' own runs
fp() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
UP=$(fp) UP2=$(fp) RG=$(fp) RGA=$(fp) T=$DIR/train
mkdir -p "$T/tmp"
sed -e "s#@DIR@#$T#g" -e "s#@PORT_A@#$UP#g" -e "s#@PORT_B@#$UP2#g" \
    benches/compare/upstream-nginx.conf >"$T/up.conf"
cat > "$T/rg.yaml" <<C
listen: 127.0.0.1:$RG
admin: { listen: 127.0.0.1:$RGA }
workers: 1
models:
  - name: m
    default: true
    stable: { endpoints: ["http://127.0.0.1:$UP"], engine: vllm }
    candidate: { endpoints: ["http://127.0.0.1:$UP2"] }
    weight: 0%
    shadow: { sample: 10% }
C
taskset -c 0 nginx -e "$T/up.err" -p "$T" -c "$T/up.conf" & NG=$!
trap 'kill $NG 2>/dev/null || true' EXIT
taskset -c 0 "$DIR/gen/release/rollgate" run --config "$T/rg.yaml" >"$T/rg.log" 2>&1 & RGP=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$RG/" && break; sleep 0.1; done
printf '{"model":"m","messages":[{"role":"user","content":"hi"}]}' >"$T/small.json"
python3 -c "print('{\"model\":\"m\",\"x\":\"' + 'a' * 65516 + '\"}', end='')" >"$T/big.json"
load() { taskset -c 1 h2load --h1 -c 64 -m 1 "$@" | grep -E '^requests:'; }
load -n 300000 -d "$T/small.json" -H 'content-type: application/json' "http://127.0.0.1:$RG/v1/chat/completions"
load -n 30000 -d "$T/big.json" -H 'content-type: application/json' "http://127.0.0.1:$RG/v1/chat/completions"
load -n 50000 "http://127.0.0.1:$RG/"
kill -TERM "$RGP"; wait "$RGP" # the profile is written at exit
"$PROFDATA" merge -o "$DIR/merged.profdata" "$DIR"/profiles/*.profraw
RUSTFLAGS="-Cprofile-use=$DIR/merged.profdata" CARGO_TARGET_DIR="$DIR/use" \
    cargo build --release -p rollgate
echo "$DIR/use/release/rollgate"
