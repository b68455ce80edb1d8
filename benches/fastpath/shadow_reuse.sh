#!/usr/bin/env bash
# How many mirrored (shadow) requests reuse a pooled upstream connection: new connections the
# upstream accepted (nginx stub_status) against shadow requests rollgate counted, over 40,000
# requests with a 90/10 split and a 10 % then 100 % mirror (candidate = the same upstream).
# usage: benches/fastpath/shadow_reuse.sh ROLLGATE_BIN [fast|hyper]
set -euo pipefail
BIN=$1 DP=${2:-fast}
D=$(mktemp -d /tmp/fastpath-shadow.XXXX)
cat > "$D/up.conf" <<C
daemon off; master_process off; worker_processes 1; error_log $D/up.err; pid $D/up.pid;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18381; location /nginx_status { stub_status; } location / { return 200 "ok\n"; } } }
C
metric() { curl -s http://127.0.0.1:18384/metrics | awk "/^$1/ {s+=\$2} END{print s+0}"; }
accepts() { curl -s http://127.0.0.1:18381/nginx_status | awk 'NR==3{print $1}'; }
for S in 10% 100%; do
  printf 'listen: 127.0.0.1:18383\nadmin: { listen: 127.0.0.1:18384 }\nworkers: 1\ndata_plane: %s\nmodels:\n  - name: m\n    default: true\n    stable: { endpoints: ["http://127.0.0.1:18381"], engine: vllm }\n    candidate: { endpoints: ["http://127.0.0.1:18381"], engine: vllm }\n    weight: 10%%\n    shadow: { sample: %s, saturated_sample: 100%% }\n' "$DP" "$S" > "$D/rg.yaml"
  taskset -c 0 nginx -c "$D/up.conf" -p "$D" & U=$!
  taskset -c 0 "$BIN" run --config "$D/rg.yaml" > "$D/rg.log" 2>&1 & R=$!
  sleep 1.5
  taskset -c 1 h2load --h1 -n 4000 -c 64 http://127.0.0.1:18383/ > /dev/null
  a0=$(accepts); s0=$(metric 'rollgate_proxy_requests_total\{.*variant="shadow"'); d0=$(metric rollgate_proxy_shadow_dropped_total)
  taskset -c 1 h2load --h1 -n 40000 -c 64 http://127.0.0.1:18383/ | grep -E "^requests:"
  a1=$(accepts); s1=$(metric 'rollgate_proxy_requests_total\{.*variant="shadow"'); d1=$(metric rollgate_proxy_shadow_dropped_total)
  echo "sample $S: shadow requests=$((s1 - s0)) dropped=$((d1 - d0)) new upstream connections=$((a1 - a0))"
  kill $R $U; wait $R $U 2>/dev/null || true
done
