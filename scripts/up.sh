#!/usr/bin/env bash
# Runs a local 3-member kvstore cluster on loopback (the store half of the HA control
# plane; the apiserver, scheduler and agents come with their issues). Data and logs live
# under $DATA_DIR (default ./data); re-running reuses them. Ctrl-C stops the members.
set -euo pipefail
BIN=${KVSTORE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/kvstore/target}/debug/kvstore}
DATA_DIR=${DATA_DIR:-data}
mkdir -p "$DATA_DIR"
CLUSTER="m1=http://127.0.0.1:2380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"
ENDPOINTS="127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379"
pids=()
stop() {
  echo "stopping members: ${pids[*]}"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait
}
trap stop EXIT
trap "exit 130" INT TERM
for i in 1 2 3; do
  prefix=$([ "$i" = 1 ] && echo "" || echo "${i}")
  "$BIN" serve --name "m$i" --data-dir "$DATA_DIR/m$i" \
    --listen-client-urls "http://127.0.0.1:${prefix}2379" --advertise-client-urls "http://127.0.0.1:${prefix}2379" \
    --listen-peer-urls "http://127.0.0.1:${prefix}2380" --initial-advertise-peer-urls "http://127.0.0.1:${prefix}2380" \
    --initial-cluster "$CLUSTER" --initial-cluster-token kvstore-local --initial-cluster-state new \
    >>"$DATA_DIR/m$i.log" 2>&1 &
  pids+=("$!")
done
for _ in $(seq 100); do
  "$BIN" --endpoints "$ENDPOINTS" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
"$BIN" --endpoints "$ENDPOINTS" endpoint status -w table
cat <<MSG

kvstore: 3 members running (logs in $DATA_DIR/m*.log). Try:
  $BIN --endpoints $ENDPOINTS put hello world
  etcdctl --endpoints $ENDPOINTS get hello
  etcdctl --endpoints $ENDPOINTS member list -w table
Ctrl-C stops the cluster; \`make up\` again restarts it with its data.
MSG
wait
