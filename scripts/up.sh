#!/usr/bin/env bash
# `make up`: the local HA control plane — 3 kvstore members (TLS between them and to the
# apiservers), 3 apiservers (scheduler and controllers under leader election), 2 node
# agents (Docker when a daemon answers, simulated nodes otherwise) and a load balancer
# for kubectl on 127.0.0.1:6443. Everything runs detached; data and logs live under
# $DATA_DIR (default ./data), and re-running reuses them. Extra arguments go to
# `cluster up` (e.g. `--simulate`, `--agents 3`, `--base-port 7443`).
set -euo pipefail
BIN_DIR=${BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/kvstore/target}/debug}
DATA_DIR=${DATA_DIR:-data}
# The busybox image the README's Deployment runs (built locally, never pulled).
if docker info >/dev/null 2>&1; then
  "$(dirname "$0")/images.sh"
fi
exec "$BIN_DIR/cluster" --dir "$DATA_DIR" up "$@"
