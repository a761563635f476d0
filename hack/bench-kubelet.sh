#!/usr/bin/env bash
# Kubelet benchmark on the real Docker Engine:
#  1. N pods (default 30) created at once on one node: create -> Running and Ready, p50/p99;
#  2. the same infra + app container pair run with `docker run -d` N times concurrently;
#  3. the kubelet's resident memory with the N pods running, and its CPU use while idle;
#  4. 100 simulated nodes in one kubelet process: resident memory.
#
#   hack/bench-kubelet.sh [PODS]
# Environment: BENCH_SKIP_BUILD=1 uses target/release/minik8s as it is; BENCH_KEEP=1 keeps logs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
N=${1:-30}
BIN=${MINIK8S_BIN:-target/release/minik8s}
IMAGE=minik8s-test/busybox:latest
PAUSE=minik8s/pause:3.10

if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
    echo "building release minik8s..."
    cargo build -q --release -p minik8s --bin minik8s
fi
bash hack/images.sh >/dev/null

TMP=$(mktemp -d "${TMPDIR:-/tmp}/minik8s-kbench.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    docker ps -aq --filter label=io.minik8s.node=kbench-node | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker ps -aq --filter label=minik8s-bench=1 | xargs -r docker rm -f >/dev/null 2>&1 || true
    [[ -n ${BENCH_KEEP:-} ]] || rm -rf "$TMP"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pct() { sort -n | awk -v p="$1" '{a[NR]=$1} END {i=int((NR*p+99)/100); if (i<1) i=1; print a[i]}'; }

port=$(free_port)
"$BIN" server --data-dir "$TMP/data" --https-listen-port "$port" --bind-address 127.0.0.1 \
    --disable-agent --disable-scheduler --disable-controller-manager >"$TMP/server.log" 2>&1 &
PIDS+=($!)
export KUBECONFIG=$TMP/data/kubeconfig.yaml
for _ in $(seq 1 300); do kubectl get --raw /readyz >/dev/null 2>&1 && break; sleep 0.2; done
kubectl get --raw /readyz >/dev/null

"$BIN" kubelet --kubeconfig "$KUBECONFIG" --node-name kbench-node --port 0 --address 127.0.0.1 \
    --root-dir "$TMP/kubelet" >"$TMP/kubelet.log" 2>&1 &
KPID=$!
PIDS+=("$KPID")
for _ in $(seq 1 300); do kubectl get node kbench-node >/dev/null 2>&1 && break; sleep 0.2; done
# Warm-up: the infra image is built on first use; it is not part of the measurement.
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: warm, namespace: default}
spec:
  nodeName: kbench-node
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: $IMAGE, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
YAML
kubectl wait --for=condition=Ready pod/warm --timeout=120s >/dev/null
kubectl delete pod warm --wait=true >/dev/null

for i in $(seq 1 "$N"); do
    cat <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: bench-$i, namespace: default}
spec:
  nodeName: kbench-node
  terminationGracePeriodSeconds: 0
  containers: [{name: c, image: $IMAGE, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}]
YAML
done >"$TMP/pods.yaml"

start=$(now_ms)
kubectl create -f "$TMP/pods.yaml" >/dev/null
declare -A ready_at=()
count=0
while ((count < N)); do
    t=$(now_ms)
    while read -r name st; do
        if [[ $st == True && -z ${ready_at[$name]:-} ]]; then
            ready_at[$name]=$((t - start))
            count=$((count + 1))
        fi
    done < <(kubectl get pods -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')
    (( $(now_ms) - start > 180000 )) && { echo "pods not ready within 180 s" >&2; exit 1; }
    sleep 0.05
done
kubelet_p50=$(printf '%s\n' "${ready_at[@]}" | pct 50)
kubelet_p99=$(printf '%s\n' "${ready_at[@]}" | pct 99)

sleep 5
rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$KPID/status")
ticks=$(getconf CLK_TCK)
cpu0=$(awk '{print $14+$15}' "/proc/$KPID/stat")
sleep 30
cpu1=$(awk '{print $14+$15}' "/proc/$KPID/stat")
idle_cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$ticks" 'BEGIN {printf "%.2f", (b-a)/t/30*100}')

# Baseline: the same pair straight through the Docker CLI, N at once.
pair() {
    local s e sb
    s=$(now_ms)
    sb=$(docker run -d --label minik8s-bench=1 --ipc shareable "$PAUSE")
    docker run -d --label minik8s-bench=1 --network "container:$sb" --ipc "container:$sb" "$IMAGE" sleep 3600 >/dev/null
    e=$(now_ms)
    echo $((e - s))
}
export -f pair now_ms
export PAUSE IMAGE
start=$(now_ms)
seq 1 "$N" | xargs -P "$N" -I{} bash -c pair >"$TMP/docker.txt"
docker_p50=$(pct 50 <"$TMP/docker.txt")
docker_p99=$(pct 99 <"$TMP/docker.txt")

kill "$KPID"; wait "$KPID" 2>/dev/null || true
"$BIN" kubelet --kubeconfig "$KUBECONFIG" --runtime simulated --simulated-nodes 100 --node-name sim \
    --port 0 >"$TMP/sim.log" 2>&1 &
SPID=$!
PIDS+=("$SPID")
for _ in $(seq 1 300); do
    (( $(kubectl get nodes -l type=simulated --no-headers 2>/dev/null | wc -l) >= 100 )) && break
    sleep 0.2
done
sleep 15
sim_rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$SPID/status")

printf '\n%-55s %s\n' "figure" "value"
printf '%-55s %s ms\n' "kubelet: $N pods create -> Ready, p50" "$kubelet_p50"
printf '%-55s %s ms\n' "kubelet: $N pods create -> Ready, p99" "$kubelet_p99"
printf '%-55s %s ms\n' "docker run -d infra+app pair x$N concurrently, p50" "$docker_p50"
printf '%-55s %s ms\n' "docker run -d infra+app pair x$N concurrently, p99" "$docker_p99"
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB (%d KiB)", k / 1024, k }'; }
printf '%-55s %s\n' "kubelet RSS with $N pods" "$(mib "$rss_kb")"
printf '%-55s %s %%\n' "kubelet CPU when idle (30 s, one core = 100 %)" "$idle_cpu"
printf '%-55s %s\n' "100 simulated nodes in one process: RSS" "$(mib "$sim_rss_kb")"
