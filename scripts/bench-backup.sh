#!/usr/bin/env bash
# Backup speed, side by side: loads the same ~1 GiB keyspace into a one-member etcd and a
# one-member kvstore (16,384 puts of 64 KiB values through `bench put`), then times
# `etcdctl snapshot save` / `kvstore snapshot save` and each tool's restore.
# Usage: scripts/bench-backup.sh [TOTAL_PUTS] (prints a markdown table)
set -euo pipefail
TOTAL=${1:-16384}
T=${CARGO_TARGET_DIR:-$HOME/.cache/kvstore/target}/release
DIR=$(mktemp -d /tmp/bench-backup.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
secs() { python3 -c "import time; print(time.time())"; }
rate() { python3 -c "print(f'{$1/1048576/($3-$2):.1f}')"; }

run_one() { # system
  local sys=$1 cp pp; cp=$(port); pp=$(port)
  local flags=(--name m1 --data-dir "$DIR/$sys-data" --listen-client-urls "http://127.0.0.1:$cp"
    --advertise-client-urls "http://127.0.0.1:$cp" --listen-peer-urls "http://127.0.0.1:$pp"
    --initial-advertise-peer-urls "http://127.0.0.1:$pp" --initial-cluster "m1=http://127.0.0.1:$pp"
    --quota-backend-bytes 8589934592)
  if [ "$sys" = etcd ]; then etcd "${flags[@]}" --log-level error >"$DIR/$sys.log" 2>&1 &
  else "$T/kvstore" serve "${flags[@]}" --log-level warn >"$DIR/$sys.log" 2>&1 & fi
  pids+=("$!")
  for _ in $(seq 100); do etcdctl --endpoints "127.0.0.1:$cp" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
  "$T/bench" --endpoints "127.0.0.1:$cp" --conns 4 --clients 16 put --total "$TOTAL" --key-size 8 \
    --val-size 65536 --key-space-size "$TOTAL" --sequential-keys >"$DIR/$sys.load" 2>&1
  local t0 t1 t2 size
  t0=$(secs)
  if [ "$sys" = etcd ]; then etcdctl --endpoints "127.0.0.1:$cp" snapshot save "$DIR/$sys.db" >/dev/null 2>&1
  else "$T/kvstore" --endpoints "127.0.0.1:$cp" snapshot save "$DIR/$sys.db" >/dev/null; fi
  t1=$(secs)
  if [ "$sys" = etcd ]; then etcdctl snapshot restore "$DIR/$sys.db" --data-dir "$DIR/$sys-restored" >/dev/null 2>&1
  else "$T/kvstore" snapshot restore "$DIR/$sys.db" --data-dir "$DIR/$sys-restored" >/dev/null; fi
  t2=$(secs)
  size=$(stat -c %s "$DIR/$sys.db")
  echo "| $sys | $(python3 -c "print(f'{$size/1048576:.0f}')") | $(rate "$size" "$t0" "$t1") | $(rate "$size" "$t1" "$t2") |"
}
echo "| system | snapshot file (MiB) | save (MiB/s) | restore (MiB/s) |"
echo "| --- | --- | --- | --- |"
run_one etcd
run_one kvstore
