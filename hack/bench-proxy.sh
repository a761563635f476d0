#!/usr/bin/env bash
# Proxy benchmark: 1,000 Services x 3 endpoints synced by `minik8s proxy` into a network
# namespace this script's tool creates (the host's iptables are not touched). Needs root.
# Reports the full sync, endpoint change -> rules in place, and the proxy's resident memory.
#
#   hack/bench-proxy.sh [extra bench-proxy flags, e.g. --services 2000]
# Environment: BENCH_SKIP_BUILD=1 uses the binaries in target/release as they are;
# BENCH_KEEP=1 keeps the temp dir (server log).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${MINIK8S_BIN:-target/release/minik8s}
BENCH=${BENCH_PROXY_BIN:-target/release/bench-proxy}

if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
    echo "building release binaries..."
    cargo build -q --release -p minik8s -p hack --bin minik8s --bin bench-proxy
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/minik8s-pbench.XXXXXX")
SERVER_PID=""
cleanup() {
    if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

port=$(free_port)
"$BIN" server --data-dir "$TMP/data" --https-listen-port "$port" --bind-address 127.0.0.1 \
    --disable-agent --disable-controller-manager --disable-scheduler >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
export KUBECONFIG=$TMP/data/kubeconfig.yaml
for _ in $(seq 1 300); do kubectl get --raw /readyz >/dev/null 2>&1 && break; sleep 0.2; done
kubectl get --raw /readyz >/dev/null

"$BENCH" --kubeconfig "$KUBECONFIG" --minik8s "$BIN" "$@"
