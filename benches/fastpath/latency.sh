#!/usr/bin/env bash
# Added latency on one unloaded connection: wrk -c1 p50/p99 direct to the upstream, through
# nginx, through rollgate. Same layout as measure.sh (proxies and upstream on core 0, wrk on 1).
# usage: benches/fastpath/latency.sh ROLLGATE_BIN [fast|hyper] [SECONDS]
set -euo pipefail
BIN=$1 DP=${2:-fast} T=${3:-5}
UP=18181 NGX=18182 RG=18183 RGA=18184
D=$(mktemp -d /tmp/fastpath-lat.XXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT
printf 'daemon off; master_process off; worker_processes 1; error_log %s/e1; pid %s/p1;\nevents {}\nhttp { access_log off; server { listen 127.0.0.1:%s; location / { return 200 "ok\\n"; } } }\n' "$D" "$D" $UP > "$D/up.conf"
printf 'daemon off; master_process off; worker_processes 1; error_log %s/e2; pid %s/p2;\nevents {}\nhttp { access_log off; upstream up { server 127.0.0.1:%s; keepalive 16; }\n server { listen 127.0.0.1:%s; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }\n' "$D" "$D" $UP $NGX > "$D/ngx.conf"
printf 'listen: 127.0.0.1:%s\nadmin: { listen: 127.0.0.1:%s }\nworkers: 1\ndata_plane: %s\nmodels:\n  - name: m\n    default: true\n    stable: { endpoints: ["http://127.0.0.1:%s"], engine: vllm }\n' $RG $RGA "$DP" $UP > "$D/rg.yaml"
taskset -c 0 nginx -c "$D/up.conf" -p "$D" & pids+=($!)
taskset -c 0 nginx -c "$D/ngx.conf" -p "$D" & pids+=($!)
taskset -c 0 "$BIN" run --config "$D/rg.yaml" >"$D/rg.log" 2>&1 & pids+=($!)
for p in $UP $NGX $RG; do for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$p/" && break; sleep 0.1; done; done
for round in 1 2 3; do
  for t in direct:$UP nginx:$NGX rollgate:$RG; do
    out=$(taskset -c 1 wrk -t1 -c1 -d"${T}s" --latency "http://127.0.0.1:${t#*:}/")
    echo "round $round ${t%%:*} p50=$(echo "$out" | awk '$1=="50%"{print $2}') p99=$(echo "$out" | awk '$1=="99%"{print $2}')"
  done
done
