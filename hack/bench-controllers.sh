#!/usr/bin/env bash
# Benchmarks the controller-manager: starts an API server (embedded store, no components) and
# a separate `minik8s controller-manager`, scales a Deployment 0 -> 1,000 and reports how long
# until all pods exist, then fills the cluster to 10,000 pods and reports the
# controller-manager's resident memory. Extra arguments go to `bench_controllers`.
#
#   hack/bench-controllers.sh                    # release build
#   PROFILE=debug hack/bench-controllers.sh      # the dev build already in target/debug
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then
    cargo build -q --release -p minik8s -p hack --bin minik8s --bin bench_controllers
else
    cargo build -q -p minik8s -p hack --bin minik8s --bin bench_controllers
fi
BIN=target/$PROFILE

TMP=$(mktemp -d "${TMPDIR:-/tmp}/minik8s-bench-ctrl.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$TMP"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$BIN/minik8s" server --data-dir "$TMP/data" --https-listen-port "$PORT" --bind-address 127.0.0.1 \
    --disable-agent --disable-scheduler --disable-controller-manager >"$TMP/server.log" 2>&1 &
PIDS+=($!)
KC=$TMP/data/kubeconfig.yaml
for _ in $(seq 600); do
    [[ -s $KC ]] && kubectl --kubeconfig "$KC" get --raw /readyz >/dev/null 2>&1 && break
    sleep 0.1
done
"$BIN/minik8s" controller-manager --kubeconfig "$KC" >"$TMP/cm.log" 2>&1 &
CM=$!
PIDS+=($CM)
"$BIN/bench_controllers" --kubeconfig "$KC" --controller-manager-pid "$CM" "$@"
