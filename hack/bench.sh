#!/usr/bin/env bash
# Benchmarks minik8s on this machine: builds release binaries, starts an API server over the
# embedded store and measures it; when `etcd` is installed, also starts an etcd on free
# loopback ports, a second API server over it, measures that server and raw etcd-client
# puts against the same etcd. Prints the figures and cleans up.
#
#   hack/bench.sh                                  # defaults of `bench --help`
#   hack/bench.sh --objects 2000 --watchers 100    # extra arguments go to every bench run
#
# The scheduler section (bench-scheduler: 1,000 nodes, 10,000 pods) gets no extra arguments;
# BENCH_NO_SCHEDULER=1 skips it.
#
# Environment: BENCH_SKIP_BUILD=1 uses the binaries already in target/release;
# BENCH_NO_ETCD=1 skips the etcd half; BENCH_KEEP=1 keeps the temp dir (logs);
# BENCH_FULL_SERVER=1 measures `minik8s server` with all its components, not the API server alone.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MINIK8S_BIN=${MINIK8S_BIN:-target/release/minik8s}
BENCH_BIN=${BENCH_BIN:-target/release/bench}
SCHED_BENCH_BIN=${SCHED_BENCH_BIN:-target/release/bench-scheduler}

if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
    echo "building release binaries..."
    cargo build -q --release -p minik8s -p hack --bin minik8s --bin bench --bin bench-scheduler
fi
for bin in "$MINIK8S_BIN" "$BENCH_BIN" "$SCHED_BENCH_BIN"; do
    [[ -x $bin ]] || { echo "$bin is not built" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/minik8s-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$TMP"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_server NAME [server flags...]: starts minik8s, waits for /readyz (deadline 60 s),
# sets SERVER_PID and KUBECONFIG_FILE, and prints the time from process start to ready.
start_server() {
    local name=$1
    shift
    local dir=$TMP/$name port
    port=$(free_port)
    mkdir -p "$dir"
    local start
    start=$(now_ms)
    "$MINIK8S_BIN" server --data-dir "$dir/data" --https-listen-port "$port" --bind-address 127.0.0.1 "$@" \
        >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    KUBECONFIG_FILE=$dir/data/kubeconfig.yaml
    local deadline=$((start + 60000)) certs=0
    while :; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "server $name exited; its log:" >&2
            tail -n 30 "$dir/server.log" >&2
            return 1
        fi
        if ((certs == 0)) && [[ -s $KUBECONFIG_FILE ]] && grep -q client-key-data "$KUBECONFIG_FILE"; then
            for f in certificate-authority-data client-certificate-data client-key-data; do
                sed -n "s/^ *$f: *//p" "$KUBECONFIG_FILE" | head -n1 | tr -d '"' | base64 -d >"$dir/$f"
            done
            certs=1
        fi
        if ((certs == 1)) && curl -fsS --max-time 1 --cacert "$dir/certificate-authority-data" \
            --cert "$dir/client-certificate-data" --key "$dir/client-key-data" \
            "https://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
            break
        fi
        if (($(now_ms) > deadline)); then
            echo "server $name not ready within 60 s; its log:" >&2
            tail -n 30 "$dir/server.log" >&2
            return 1
        fi
        sleep 0.01
    done
    local ready_ms=$(($(now_ms) - start))
    echo "== $name: /readyz answered ${ready_ms} ms after process start (target <= 1000 ms)"
    echo "$name readyz_ms=$ready_ms" >>"$TMP/summary"
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
STATUS=0

# The API server alone: `minik8s server` also runs the kubelet, proxy, DNS, scheduler and
# controllers in the same process (the garbage collector alone caches every object), which
# would be measured with it. BENCH_FULL_SERVER=1 measures the whole server instead.
API_ONLY=(--disable-agent --disable-scheduler --disable-controller-manager --disable-dns --disable-proxy)
[[ -z ${BENCH_FULL_SERVER:-} ]] || API_ONLY=()

# --- embedded store --------------------------------------------------------------------
if start_server embedded "${API_ONLY[@]}"; then
    "$BENCH_BIN" --kubeconfig "$KUBECONFIG_FILE" --server-pid "$SERVER_PID" --label "minik8s, embedded store" "$@" || STATUS=1
    stop_server
else
    STATUS=1
fi

# --- scheduler: a server without its own scheduler; the bench runs `minik8s scheduler` --
if [[ -n ${BENCH_NO_SCHEDULER:-} ]]; then
    echo "== scheduler: skipped (BENCH_NO_SCHEDULER)"
elif start_server scheduler --disable-scheduler --disable-controller-manager --disable-agent; then
    echo "== scheduler (embedded store)"
    "$SCHED_BENCH_BIN" --kubeconfig "$KUBECONFIG_FILE" --minik8s "$MINIK8S_BIN" || STATUS=1
    stop_server
else
    STATUS=1
fi

# --- etcd ------------------------------------------------------------------------------
if [[ -n ${BENCH_NO_ETCD:-} ]]; then
    echo "== etcd: skipped (BENCH_NO_ETCD)"
elif ! command -v etcd >/dev/null; then
    echo "== etcd: not installed, skipped (Debian: apt-get install etcd-server)"
else
    client_port=$(free_port)
    peer_port=$(free_port)
    ETCD_URL=http://127.0.0.1:$client_port
    etcd --name bench --data-dir "$TMP/etcd-data" \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "bench=http://127.0.0.1:$peer_port" >"$TMP/etcd.log" 2>&1 &
    ETCD_PID=$!
    PIDS+=("$ETCD_PID")
    deadline=$(($(now_ms) + 30000))
    until curl -fsS --max-time 1 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'; do
        if ! kill -0 "$ETCD_PID" 2>/dev/null || (($(now_ms) > deadline)); then
            echo "etcd did not become healthy; its log:" >&2
            tail -n 30 "$TMP/etcd.log" >&2
            exit 1
        fi
        sleep 0.05
    done
    echo "== etcd $(etcd --version | head -n1 | awk '{print $3}') on $ETCD_URL"
    if start_server etcd --datastore-endpoint "$ETCD_URL" "${API_ONLY[@]}"; then
        "$BENCH_BIN" --kubeconfig "$KUBECONFIG_FILE" --server-pid "$SERVER_PID" --label "minik8s, etcd store" "$@" || STATUS=1
        stop_server
    else
        STATUS=1
    fi
    env -u KUBECONFIG "$BENCH_BIN" --raw-etcd "$ETCD_URL" "$@" || STATUS=1
fi

echo
cat "$TMP/summary" 2>/dev/null || true
[[ -z ${BENCH_KEEP:-} ]] || echo "kept $TMP"
exit "$STATUS"
