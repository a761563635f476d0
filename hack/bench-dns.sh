#!/usr/bin/env bash
# Benchmarks the cluster DNS: starts an API server (embedded store, no components) and a
# separate `minik8s dns` on 127.0.0.1, creates 1,000 Services, then reports the queries/s
# answered for cluster names and how long a new Service takes to be answered.
# Extra arguments go to `bench_dns` (--services, --clients, --seconds, --new-services).
#
#   hack/bench-dns.sh                    # release build
#   PROFILE=debug hack/bench-dns.sh      # the dev build already in target/debug
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PROFILE=${PROFILE:-release}
if [[ $PROFILE == release ]]; then
    cargo build -q --release -p minik8s -p hack --bin minik8s --bin bench_dns
else
    cargo build -q -p minik8s -p hack --bin minik8s --bin bench_dns
fi
BIN=target/$PROFILE

TMP=$(mktemp -d "${TMPDIR:-/tmp}/minik8s-bench-dns.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
"$BIN/minik8s" server --data-dir "$TMP/data" --https-listen-port "$PORT" --bind-address 127.0.0.1 \
    --disable-agent --disable-scheduler --disable-controller-manager --disable-dns \
    >"$TMP/server.log" 2>&1 &
PIDS+=($!)
KC=$TMP/data/kubeconfig.yaml
for _ in $(seq 600); do
    [[ -s $KC ]] && kubectl --kubeconfig "$KC" get --raw /readyz >/dev/null 2>&1 && break
    sleep 0.1
done
DNS_PORT=$(free_port)
"$BIN/minik8s" dns --kubeconfig "$KC" --bind-address 127.0.0.1 --port "$DNS_PORT" \
    --no-kube-dns-service --log-level warn >"$TMP/dns.log" 2>&1 &
PIDS+=($!)
"$BIN/bench_dns" --kubeconfig "$KC" --dns "127.0.0.1:$DNS_PORT" "$@"
