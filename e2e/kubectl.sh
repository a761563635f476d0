#!/usr/bin/env bash
# Stock-kubectl scenarios against a freshly started minik8s API server.
#
#   e2e/kubectl.sh                      # embedded store, builds target/debug/minik8s
#   E2E_ETCD=http://127.0.0.1:2379 e2e/kubectl.sh
#   MINIK8S_BIN=target/release/minik8s e2e/kubectl.sh
#
# Environment:
#   MINIK8S_BIN   server binary (default target/debug/minik8s, built with `cargo build -p minik8s`
#                 when this variable is unset)
#   KUBECTL       kubectl to run (default `kubectl` on PATH; may be the version dispatcher)
#   E2E_ETCD      loopback etcd URL; the server then stores state there under a fresh prefix
#   E2E_ETCD_PREFIX  that prefix (default /minik8s-e2e-<pid>-<random>; empty: the server's default)
#   E2E_AGENT=1   also run the node agent (kubelet) in the server (default: --disable-agent)
#   E2E_KEEP=1    keep the temp dir (server log, kubeconfig, dumped YAML) after the run
#
# Every check prints PASS/FAIL; a failure shows the command, the expected and the actual
# exit code and output. The last line is exactly "N passed, N failed".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TD=e2e/testdata # relative on purpose: kubectl quotes the path in "error when creating" messages

KUBECTL=${KUBECTL:-kubectl}
E2E_ETCD=${E2E_ETCD:-}
REQUEST_TIMEOUT=30s

# TEMPORARY: kubectl validates `create -f`/`replace -f` against /openapi/v3 and fails with
# "failed to download openapi" when the server does not serve it. When the openapi check
# below fails, this is set to --validate=false so the other scenarios still run. Delete
# this variable (and its uses) once /openapi/v3 is served.
KUBECTL_VALIDATE=""

if [[ -z ${MINIK8S_BIN:-} ]]; then
    MINIK8S_BIN=target/debug/minik8s
    echo "building minik8s (cargo build -p minik8s)..."
    cargo build -q -p minik8s
fi
[[ -x $MINIK8S_BIN ]] || { echo "MINIK8S_BIN=$MINIK8S_BIN is not an executable" >&2; exit 2; }
command -v "$KUBECTL" >/dev/null || { echo "kubectl ($KUBECTL) not found on PATH" >&2; exit 2; }
command -v jq >/dev/null || { echo "jq is required" >&2; exit 2; }
command -v curl >/dev/null || { echo "curl is required" >&2; exit 2; }
if [[ -n $E2E_ETCD && ! $E2E_ETCD =~ ^http://(127\.0\.0\.1|localhost|\[::1\]):[0-9]+/?$ ]]; then
    echo "E2E_ETCD must be a loopback http:// URL, got $E2E_ETCD" >&2
    exit 2
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/minik8s-e2e.XXXXXX")
# kubectl names itself (User-Agent, hence field managers) after its file name; a binary such
# as kubectl.1.32 runs through a link named kubectl, so it says "kubectl" as usual.
if ! KUBECTL_PATH=$(command -v "$KUBECTL"); then
    echo "kubectl not found: $KUBECTL" >&2
    exit 2
fi
mkdir -p "$TMP/bin"
ln -s "$KUBECTL_PATH" "$TMP/bin/kubectl"
KUBECTL=$TMP/bin/kubectl
echo "kubectl: $("$KUBECTL" version --client 2>/dev/null | head -n1)"
SERVER_PID=""
BG_PIDS=()

cleanup() {
    local pid
    for pid in "${BG_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    [[ -n ${E2E_KEEP:-} ]] || rm -rf "$TMP"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }

# A free TCP port on 127.0.0.1 (the kernel picks it; a tiny race with other binders remains).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null && return
    local p
    for _ in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}

# ---------------------------------------------------------------------------------------
# Checks

PASSED=0
FAILED=0
FAILED_NAMES=()
SCENARIO=""

scenario() {
    SCENARIO=$1
    echo
    echo "=== $SCENARIO"
}

pass() {
    PASSED=$((PASSED + 1))
    echo "PASS [$SCENARIO] $1"
}

# fail DESC WANT_RC WANT_OUTPUT HOW
fail() {
    FAILED=$((FAILED + 1))
    FAILED_NAMES+=("[$SCENARIO] $1")
    echo "FAIL [$SCENARIO] $1"
    echo "  command:  $CMD"
    echo "  expected: exit $2, output $4:"
    sed 's/^/    | /' <<<"$3"
    echo "  actual:   exit $RC, output:"
    sed 's/^/    | /' <<<"$OUT"
    diagnose
}

# diagnose: once per scenario, after its first failure, show what the cluster saw (the
# scenario namespace's events and the server's recent warnings), since CI keeps no temp dir.
DIAGNOSED=
diagnose() {
    [[ $DIAGNOSED != "$SCENARIO" ]] || return 0
    DIAGNOSED=$SCENARIO
    if [[ -n ${NS:-} ]]; then
        echo "  events in namespace $NS:"
        { k get events -n "$NS" -o 'custom-columns=TIME:.lastTimestamp,TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message' 2>&1 || true; } | tail -n 20 | sed 's/^/    | /'
    fi
    echo "  server warnings and errors (last 30):"
    { grep -E ' (WARN|ERROR) ' "$TMP/server.log" || true; } | tail -n 30 | sed 's/^/    | /'
}

# run CMD...: OUT = stdout and stderr, RC = exit code, CMD = the command, quoted.
run() {
    CMD=$(printf '%q ' "$@")
    CMD=${CMD% }
    RC=0
    OUT=$("$@" 2>&1) || RC=$?
}

# expect WANT_RC WANT_OUTPUT CMD...: exit code and the whole output must match exactly.
expect() {
    local want_rc=$1 want=$2
    shift 2
    run "$@"
    if [[ $RC -eq $want_rc && $OUT == "$want" ]]; then pass "$CMD"; else fail "$CMD" "$want_rc" "$want" "(exact)"; fi
}

# expect_re WANT_RC REGEX CMD...: exit code exact, output matches the extended regex.
expect_re() {
    local want_rc=$1 re=$2
    shift 2
    run "$@"
    if [[ $RC -eq $want_rc && $OUT =~ $re ]]; then pass "$CMD"; else fail "$CMD" "$want_rc" "$re" "(matching regex)"; fi
}

# check DESC CONDITION_RESULT ...: records the outcome of a check made by hand.
check_value() {
    local desc=$1 want=$2 got=$3
    CMD=$desc RC=0 OUT=$got
    if [[ $got == "$want" ]]; then pass "$desc"; else fail "$desc" 0 "$want" "(exact)"; fi
}

# wait_for SECONDS CMD...: polls CMD until it succeeds or the deadline passes.
wait_for() {
    local deadline=$(($(now_ms) + $1 * 1000))
    shift
    until "$@" >/dev/null 2>&1; do
        (($(now_ms) < deadline)) || return 1
        sleep 0.1
    done
}

k() { "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --request-timeout="$REQUEST_TIMEOUT" "$@"; }
# shellcheck disable=SC2086 # KUBECTL_VALIDATE is empty or one flag
kcreate() { k create $KUBECTL_VALIDATE "$@"; }
# shellcheck disable=SC2086
kreplace() { k replace $KUBECTL_VALIDATE "$@"; }
stdout_only() { "$@" 2>/dev/null; }

# new_ns NAME: the scenario's namespace, created from YAML (kubectl create namespace sends protobuf).
new_ns() {
    sed "s/NAMESPACE/$1/" "$TD/namespace.yaml" >"$TMP/ns-$1.yaml"
    expect 0 "namespace/$1 created" kcreate -f "$TMP/ns-$1.yaml"
}

# drop_ns NAME: best-effort cleanup at the end of a scenario (not a check).
drop_ns() { k delete ns "$1" --wait=false >/dev/null 2>&1 || true; }

# ---------------------------------------------------------------------------------------
# Server

PORT=$(free_port)
DATA_DIR=$TMP/data
SERVER_ARGS=(server --data-dir "$DATA_DIR" --https-listen-port "$PORT" --bind-address 127.0.0.1)
# These scenarios check what kubectl shows of the control plane; pods running on Docker are
# covered by the kubelet's own tests (kubelet/tests). E2E_AGENT=1 runs this node's kubelet too.
[[ -n ${E2E_AGENT:-} ]] || SERVER_ARGS+=(--disable-agent)
if [[ -n $E2E_ETCD ]]; then
    # A fresh key prefix so runs never see each other's objects in a shared etcd
    # (E2E_ETCD_PREFIX= uses the server's default, /registry).
    SERVER_ARGS+=(--datastore-endpoint "$E2E_ETCD")
    E2E_ETCD_PREFIX=${E2E_ETCD_PREFIX-/minik8s-e2e-$$-$RANDOM}
    [[ -z $E2E_ETCD_PREFIX ]] || SERVER_ARGS+=(--etcd-prefix "$E2E_ETCD_PREFIX")
fi
echo "starting $MINIK8S_BIN ${SERVER_ARGS[*]}"
START_MS=$(now_ms)
"$MINIK8S_BIN" "${SERVER_ARGS[@]}" >"$TMP/server.log" 2>&1 &
SERVER_PID=$!
KUBECONFIG_FILE=$DATA_DIR/kubeconfig.yaml

server_alive() { kill -0 "$SERVER_PID" 2>/dev/null; }

# kubeconfig_field NAME: the base64 value of the first `NAME: value` line, decoded.
kubeconfig_field() {
    sed -n "s/^ *$1: *//p" "$KUBECONFIG_FILE" | head -n1 | tr -d '"' | base64 -d
}

readyz() {
    curl -fsS --max-time 2 --cacert "$TMP/ca.crt" --cert "$TMP/client.crt" --key "$TMP/client.key" \
        "https://127.0.0.1:$PORT/readyz" >/dev/null 2>&1
}

wait_ready() {
    local deadline=$(($(now_ms) + 60000))
    while ! [[ -s $KUBECONFIG_FILE ]] || ! grep -q client-key-data "$KUBECONFIG_FILE"; do
        server_alive || return 1
        (($(now_ms) < deadline)) || return 1
        sleep 0.05
    done
    kubeconfig_field certificate-authority-data >"$TMP/ca.crt"
    kubeconfig_field client-certificate-data >"$TMP/client.crt"
    kubeconfig_field client-key-data >"$TMP/client.key"
    until readyz; do
        server_alive || return 1
        (($(now_ms) < deadline)) || return 1
        sleep 0.05
    done
}

if ! wait_ready; then
    echo "the server did not become ready (pid $SERVER_PID alive: $(server_alive && echo yes || echo no)); its log:"
    tail -n 50 "$TMP/server.log"
    echo "0 passed, 1 failed"
    exit 1
fi
echo "server ready on 127.0.0.1:$PORT after $(($(now_ms) - START_MS)) ms (/readyz)"

# ---------------------------------------------------------------------------------------
scenario "server"

expect_re 0 '^v1\.33\.' stdout_only bash -c "$(printf '%q ' "$KUBECTL") --kubeconfig $(printf '%q' "$KUBECONFIG_FILE") version -o json | jq -r .serverVersion.gitVersion"
expect 0 "ok" k get --raw /readyz
expect 0 "ok" k get --raw /livez
run k get --raw /openapi/v3
if [[ $RC -eq 0 ]] && jq -e '.paths["api/v1"]' >/dev/null 2>&1 <<<"$OUT"; then
    pass "server serves /openapi/v3 with api/v1"
else
    fail "server serves /openapi/v3 with api/v1" 0 '{"paths":{"api/v1":...}}' "(JSON with .paths[\"api/v1\"])"
    KUBECTL_VALIDATE="--validate=false" # TEMPORARY, see its definition
    echo "NOTE: /openapi/v3 is not served: create/replace run with $KUBECTL_VALIDATE"
fi

# ---------------------------------------------------------------------------------------
scenario "namespaces"

expect 0 "namespace/default
namespace/kube-node-lease
namespace/kube-public
namespace/kube-system" k get ns -o name
expect_re 0 '^NAME +STATUS +AGE
default +Active +[0-9]+[smhd]
kube-node-lease +Active +[0-9]+[smhd]
kube-public +Active +[0-9]+[smhd]
kube-system +Active +[0-9]+[smhd]$' k get ns
expect 0 "Active" k get ns default -o 'jsonpath={.status.phase}'
expect 1 'Error from server (NotFound): namespaces "nope" not found' k get ns nope

# ---------------------------------------------------------------------------------------
scenario "api-resources"

run k api-resources
API_RESOURCES=$OUT
api_resource() {
    local re=$1
    CMD="kubectl api-resources | grep -E '$re'"
    if grep -Eq "$re" <<<"$API_RESOURCES"; then pass "$CMD"; else fail "$CMD" 0 "a line matching $re" "(a line)"; fi
}
api_resource '^NAME +SHORTNAMES +APIVERSION +NAMESPACED +KIND$'
api_resource '^configmaps +cm +v1 +true +ConfigMap$'
api_resource '^namespaces +ns +v1 +false +Namespace$'
api_resource '^pods +po +v1 +true +Pod$'
api_resource '^secrets +v1 +true +Secret$'
api_resource '^services +svc +v1 +true +Service$'
api_resource '^deployments +deploy +apps/v1 +true +Deployment$'
expect 0 "configmaps
deployments.apps
pods
services" bash -c "$(printf '%q ' "$KUBECTL") --kubeconfig $(printf '%q' "$KUBECONFIG_FILE") api-resources -o name | grep -E '^(configmaps|pods|services|deployments\.apps)$' | sort"

# ---------------------------------------------------------------------------------------
NS=e2e-configmaps
scenario "configmaps"

new_ns $NS
expect 0 "configmap/x created" kcreate -n $NS -f $TD/configmap.yaml
expect 0 "configmap/y created" kcreate -n $NS -f $TD/configmap-y.yaml
expect 0 "configmap/x" k get -n $NS cm x -o name
expect_re 0 '^NAME +DATA +AGE
x +2 +[0-9]+[smhd]$' k get -n $NS cm x
expect 0 "value" k get -n $NS cm x -o 'jsonpath={.data.key}'
expect 0 "line one
line two" k get -n $NS configmap x -o 'jsonpath={.data.multi}'
expect 0 "configmap/x
configmap/y" k get -n $NS cm -l app -o name
expect 0 "configmap/x" k get -n $NS cm -l app=x -o name
expect 0 "configmap/y" k get -n $NS cm -l 'app in (y,z)' -o name
expect 0 "configmap/y" k get -n $NS cm -l app,app!=x -o name
expect 0 "configmap/y" k get -n $NS cm --field-selector metadata.name=y -o name
expect 0 "configmap/x" k get -n $NS cm -l app --field-selector metadata.name!=y -o name
expect 0 "x=value
y=other" k get -n $NS cm -l app -o 'jsonpath={range .items[*]}{.metadata.name}={.data.key}{"\n"}{end}'
expect 0 "x y" k get -n $NS cm -l app -o 'jsonpath={.items[*].metadata.name}'
expect 0 "configmap/x configmap/y" bash -c "$(printf '%q ' "$KUBECTL") --kubeconfig $(printf '%q' "$KUBECONFIG_FILE") get -A cm -l app -o name | sort | xargs"
expect 1 'Error from server (NotFound): configmaps "nope" not found' k get -n $NS cm nope
expect 1 'Error from server (NotFound): configmaps "nope" not found' k delete -n $NS cm nope
expect 1 "Error from server (AlreadyExists): error when creating \"$TD/configmap-y.yaml\": configmaps \"y\" already exists" \
    kcreate -n $NS -f $TD/configmap-y.yaml
expect 1 "The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')" \
    kcreate -n $NS -f $TD/configmap-bad-name.yaml
expect 1 "Error from server (NotFound): error when creating \"$TD/configmap-missing-ns.yaml\": namespaces \"missing\" not found" \
    kcreate -f $TD/configmap-missing-ns.yaml
expect 1 "Error from server (NotFound): error when creating \"$TD/configmap.yaml\": namespaces \"missing\" not found" \
    kcreate -n missing -f $TD/configmap.yaml
expect 0 'configmap "x" deleted' k delete -n $NS cm x
expect 1 'Error from server (NotFound): configmaps "x" not found' k get -n $NS cm x
expect 0 'configmap "y" deleted' k delete -n $NS -f $TD/configmap-y.yaml
expect 0 "" stdout_only k get -n $NS cm -l app -o name
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-secrets
scenario "secrets"

new_ns $NS
expect 0 "secret/creds created" kcreate -n $NS -f $TD/secret.yaml
expect 0 "secret/creds" k get -n $NS secret creds -o name
expect_re 0 '^NAME +TYPE +DATA +AGE
creds +Opaque +2 +[0-9]+[smhd]$' k get -n $NS secrets
expect 0 "czNjcjN0" k get -n $NS secret creds -o 'jsonpath={.data.password}'
# stringData is write-only: merged into data, never stored or returned.
expect 0 "YWRtaW4=" k get -n $NS secret creds -o 'jsonpath={.data.username}'
expect 0 "" k get -n $NS secret creds -o 'jsonpath={.stringData}'
expect 0 "secret/creds" k get -n $NS secret -l app=web -o name
expect 1 'Error from server (NotFound): secrets "nope" not found' k get -n $NS secret nope
expect 0 'secret "creds" deleted' k delete -n $NS secret creds
expect 1 'Error from server (NotFound): secrets "creds" not found' k get -n $NS secret creds
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-services
scenario "services"

new_ns $NS
expect 0 "service/web created" kcreate -n $NS -f $TD/service.yaml
expect 0 "service/web" k get -n $NS svc web -o name
expect 0 "ClusterIP TCP 8080 SingleStack None" \
    k get -n $NS service web -o 'jsonpath={.spec.type} {.spec.ports[0].protocol} {.spec.ports[0].targetPort} {.spec.ipFamilyPolicy} {.spec.sessionAffinity}'
# ClusterIPs come from --service-cidr (10.96.0.0/12).
expect_re 0 '^NAME +TYPE +CLUSTER-IP +EXTERNAL-IP +PORT\(S\) +AGE
web +ClusterIP +10\.(9[6-9]|10[0-9]|11[01])\.[0-9]+\.[0-9]+ +<none> +80/TCP +[0-9]+[smhd]$' k get -n $NS svc
expect 1 'Error from server (NotFound): services "nope" not found' k get -n $NS svc nope
expect 0 'service "web" deleted' k delete -n $NS svc web
expect 1 'Error from server (NotFound): services "web" not found' k get -n $NS svc web
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-deployments
scenario "deployments"

new_ns $NS
expect 0 "deployment.apps/web created" kcreate -n $NS -f $TD/deployment.yaml
expect 0 "deployment.apps/web" k get -n $NS deploy web -o name
expect 0 "1 RollingUpdate 25% 25% 10 600 IfNotPresent Always" \
    k get -n $NS deployment web -o 'jsonpath={.metadata.generation} {.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge} {.spec.strategy.rollingUpdate.maxUnavailable} {.spec.revisionHistoryLimit} {.spec.progressDeadlineSeconds} {.spec.template.spec.containers[0].imagePullPolicy} {.spec.template.spec.restartPolicy}'
expect_re 0 '^NAME +READY +UP-TO-DATE +AVAILABLE +AGE
web +0/2 +[0-2] +0 +[0-9]+[smhd]$' k get -n $NS deployments.apps
expect 1 "The Deployment \"bad-selector\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: \`selector\` does not match template \`labels\`" \
    kcreate -n $NS -f $TD/deployment-bad-selector.yaml
expect 1 'Error from server (NotFound): deployments.apps "nope" not found' k get -n $NS deploy nope
expect 0 'deployment.apps "web" deleted' k delete -n $NS deploy web --timeout=60s
expect 1 'Error from server (NotFound): deployments.apps "web" not found' k get -n $NS deploy web
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-pods
scenario "pods"

new_ns $NS
expect 0 "pod/web created" kcreate -n $NS -f $TD/pod.yaml
expect 0 "pod/web" k get -n $NS po web -o name
expect 0 "Pending Always ClusterFirst default-scheduler 30 /dev/termination-log File BestEffort" \
    k get -n $NS pod web -o 'jsonpath={.status.phase} {.spec.restartPolicy} {.spec.dnsPolicy} {.spec.schedulerName} {.spec.terminationGracePeriodSeconds} {.spec.containers[0].terminationMessagePath} {.spec.containers[0].terminationMessagePolicy} {.status.qosClass}'
expect_re 0 '^NAME +READY +STATUS +RESTARTS +AGE
web +0/1 +Pending +0 +[0-9]+[smhd]$' k get -n $NS pods
expect 1 'Error from server (NotFound): pods "nope" not found' k get -n $NS pod nope
# A pod bound to no node is deleted at once.
expect 0 'pod "web" deleted' k delete -n $NS pod web --timeout=60s
expect 1 'Error from server (NotFound): pods "web" not found' k get -n $NS pod web
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-multi
scenario "several kinds at once"

new_ns $NS
expect 0 "pod/web created
service/web created
deployment.apps/web created" kcreate -n $NS -f $TD/pod.yaml -f $TD/service.yaml -f $TD/deployment.yaml
# The deployment's own pods (pod/web-<hash>-<id>) may already be there: the controllers run.
expect_re 0 '^pod/web
(pod/web-[a-z0-9]+-[a-z0-9]+
)*service/web
deployment.apps/web$' k get -n $NS po,svc,deploy -o name
expect 0 "pod/web
service/web
deployment.apps/web" k get -n $NS pods/web services/web deployments/web -o name
expect_re 0 '^NAME +READY +STATUS +RESTARTS +AGE
pod/web +0/1 +Pending +0 +[0-9]+[smhd]
(pod/web-[a-z0-9]+-[a-z0-9]+ +0/1 +Pending +0 +[0-9]+[smhd]
)*
NAME +TYPE +CLUSTER-IP +EXTERNAL-IP +PORT\(S\) +AGE
service/web +ClusterIP +10\.(9[6-9]|10[0-9]|11[01])\.[0-9]+\.[0-9]+ +<none> +80/TCP +[0-9]+[smhd]

NAME +READY +UP-TO-DATE +AVAILABLE +AGE
deployment.apps/web +0/2 +[0-2] +0 +[0-9]+[smhd]$' k get -n $NS po,svc,deploy
expect 0 'pod "web" deleted
service "web" deleted
deployment.apps "web" deleted' k delete -n $NS -f $TD/pod.yaml -f $TD/service.yaml -f $TD/deployment.yaml --timeout=60s
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-roundtrip
scenario "get -o yaml round-trip and conflicts"

new_ns $NS
expect 0 "configmap/x created
secret/creds created
service/web created
deployment.apps/web created
pod/web created" kcreate -n $NS -f $TD/configmap.yaml -f $TD/secret.yaml -f $TD/service.yaml -f $TD/deployment.yaml -f $TD/pod.yaml
for obj in configmap/x secret/creds service/web deployment.apps/web pod/web; do
    dump=$TMP/roundtrip-${obj//\//-}.yaml
    run k get -n $NS "$obj" -o yaml
    if [[ $RC -eq 0 ]]; then
        printf '%s\n' "$OUT" >"$dump"
        pass "$CMD"
    else
        fail "$CMD" 0 "(the object as YAML)" "(any)"
        continue
    fi
    expect 0 "$obj replaced" kreplace -n $NS -f "$dump"
done
# A replace carrying a resourceVersion older than the stored one is a conflict.
run k get -n $NS cm x -o yaml
printf '%s\n' "$OUT" >"$TMP/stale-x.yaml"
expect 0 "configmap/x labeled" k label -n $NS cm x rev=2
expect 1 "Error from server (Conflict): error when replacing \"$TMP/stale-x.yaml\": Operation cannot be fulfilled on configmaps \"x\": the object has been modified; please apply your changes to the latest version and try again" \
    kreplace -n $NS -f "$TMP/stale-x.yaml"
expect 0 "2" k get -n $NS cm x -o 'jsonpath={.metadata.labels.rev}'
run k get -n $NS deploy web -o yaml
printf '%s\n' "$OUT" >"$TMP/stale-web.yaml"
expect 0 "deployment.apps/web annotated" k annotate -n $NS deploy web touched=yes
expect 1 "Error from server (Conflict): error when replacing \"$TMP/stale-web.yaml\": Operation cannot be fulfilled on deployments.apps \"web\": the object has been modified; please apply your changes to the latest version and try again" \
    kreplace -n $NS -f "$TMP/stale-web.yaml"
# Without a resourceVersion, replace is unconditional.
sed 's/key: value/key: replaced/' $TD/configmap.yaml >"$TMP/cm-x-replaced.yaml"
expect 0 "configmap/x replaced" kreplace -n $NS -f "$TMP/cm-x-replaced.yaml"
expect 0 "replaced" k get -n $NS cm x -o 'jsonpath={.data.key}'
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-labels
scenario "label and annotate"

new_ns $NS
expect 0 "configmap/x created" kcreate -n $NS -f $TD/configmap.yaml
expect 0 "configmap/x labeled" k label -n $NS cm x tier=db
expect 0 "db" k get -n $NS cm x -o 'jsonpath={.metadata.labels.tier}'
expect 1 "error: 'tier' already has a value (db), and --overwrite is false" k label -n $NS cm x tier=web
expect 0 "configmap/x labeled" k label -n $NS cm x tier=web --overwrite
expect 0 "configmap/x" k get -n $NS cm -l tier=web -o name
expect 0 "" stdout_only k get -n $NS cm -l tier=db -o name
expect 0 "configmap/x unlabeled" k label -n $NS cm x tier-
expect 0 '{"app":"x"}' k get -n $NS cm x -o 'jsonpath={.metadata.labels}'
expect 0 "configmap/x annotated" k annotate -n $NS cm x note=a
expect 0 "a" k get -n $NS cm x -o 'jsonpath={.metadata.annotations.note}'
expect 1 "error: --overwrite is false but found the following declared annotation(s): 'note' already has a value (a)" \
    k annotate -n $NS cm x note=b
expect 0 "configmap/x annotated" k annotate -n $NS cm x note=b --overwrite
expect 0 "b" k get -n $NS cm x -o 'jsonpath={.metadata.annotations.note}'
expect 0 "configmap/x annotated" k annotate -n $NS cm x note-
expect 0 "" k get -n $NS cm x -o 'jsonpath={.metadata.annotations.note}'
expect 1 'Error from server (NotFound): configmaps "nope" not found' k label -n $NS cm nope a=b
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-chunks
scenario "chunked lists"

new_ns $NS
MANY_CREATED=$(for i in $(seq -w 0 24); do echo "configmap/many-$i created"; done)
MANY_NAMES=$(for i in $(seq -w 0 24); do echo "configmap/many-$i"; done)
expect 0 "$MANY_CREATED" kcreate -n $NS -f $TD/configmaps-many.yaml
expect 0 "$MANY_NAMES" k get -n $NS cm -l chunk=yes --chunk-size=2 -o name
expect 0 "$MANY_NAMES" k get -n $NS cm --field-selector metadata.namespace=$NS -l chunk --chunk-size=7 -o name
run k get -n $NS cm -l chunk=yes --chunk-size=2 --no-headers
check_value "kubectl get cm --chunk-size=2 --no-headers: 25 rows" "25" "$(grep -c '^many-' <<<"$OUT" || true)"
# 25 objects in pages of 2: 13 requests, each but the first carrying a continue token.
run k get -n $NS cm -l chunk=yes --chunk-size=2 -o name -v=6
# kubectl 1.33 logs `"Response" verb="GET" url=...`, 1.32 `GET https://... 200 OK`.
CHUNK_LOG=$(grep -E '"Response" verb="GET"|\] GET https://' <<<"$OUT" | grep 'limit=2' || true)
check_value "kubectl get --chunk-size=2 -v=6: requests with limit=2" "13" "$(grep -c . <<<"$CHUNK_LOG" || true)"
check_value "kubectl get --chunk-size=2 -v=6: requests with continue=" "12" "$(grep -c 'continue=' <<<"$CHUNK_LOG" || true)"
run k get --raw "/api/v1/namespaces/$NS/configmaps?limit=10"
check_value "GET configmaps?limit=10: 10 items and a continue token" "10 true" \
    "$(jq -r '"\(.items | length) \(.metadata.continue != null and .metadata.continue != "")"' <<<"$OUT" 2>&1)"
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-watch
scenario "watch"

new_ns $NS
expect 0 "configmap/w1 created" kcreate -n $NS -f $TD/configmap-watch.yaml
k get -n $NS cm -l watch=yes -w --output-watch-events -o json >"$TMP/watch.json" 2>"$TMP/watch.err" &
WATCH_PID=$!
BG_PIDS+=("$WATCH_PID")
watch_events() { jq -r '"\(.type) \(.object.metadata.name) \(.object.data.v)"' <"$TMP/watch.json" 2>/dev/null || true; }
watch_has() { [[ $(watch_events) == "$1" ]]; }
if wait_for 20 watch_has "ADDED w1 1"; then
    pass "kubectl get -w --output-watch-events lists w1 as ADDED"
else
    CMD="kubectl get -n $NS cm -l watch=yes -w --output-watch-events -o json" RC=0
    OUT="$(watch_events)
stderr: $(cat "$TMP/watch.err")"
    fail "kubectl get -w lists w1 as ADDED within 20s" 0 "ADDED w1 1" "(events)"
fi
expect 0 "configmap/w1 patched" k patch -n $NS cm w1 --type=merge -p '{"data":{"v":"2"}}'
expect 0 'configmap "w1" deleted' k delete -n $NS cm w1
expect 0 "configmap/w2 created" kcreate -n $NS -f $TD/configmap-watch-2.yaml
WANT_EVENTS="ADDED w1 1
MODIFIED w1 2
DELETED w1 2
ADDED w2 1"
wait_for 20 watch_has "$WANT_EVENTS" || true
CMD="kubectl get -n $NS cm -l watch=yes -w --output-watch-events -o json (events within 20s)" RC=0
OUT=$(watch_events)
if [[ $OUT == "$WANT_EVENTS" ]]; then
    pass "$CMD"
else
    OUT="$OUT
stderr: $(cat "$TMP/watch.err")"
    fail "$CMD" 0 "$WANT_EVENTS" "(events in order)"
fi
kill "$WATCH_PID" 2>/dev/null || true
wait "$WATCH_PID" 2>/dev/null || true
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-nsdelete
scenario "namespace deletion"

new_ns $NS
expect 0 "configmap/x created
secret/creds created
service/web created" kcreate -n $NS -f $TD/configmap.yaml -f $TD/secret.yaml -f $TD/service.yaml
expect 0 "namespace \"$NS\" deleted" k delete -f "$TMP/ns-$NS.yaml" --timeout=60s
ns_gone() { ! k get ns "$NS" >/dev/null 2>&1; }
wait_for 30 ns_gone || true
expect 1 "Error from server (NotFound): namespaces \"$NS\" not found" k get ns $NS
expect 0 "0 0 0" bash -c "for r in configmaps secrets services; do $(printf '%q ' "$KUBECTL") --kubeconfig $(printf '%q' "$KUBECONFIG_FILE") get --raw /api/v1/namespaces/$NS/\$r | jq -r '.items | length'; done | xargs"
expect 1 "Error from server (NotFound): error when creating \"$TD/configmap.yaml\": namespaces \"$NS\" not found" \
    kcreate -n $NS -f $TD/configmap.yaml

# ---------------------------------------------------------------------------------------
NS=e2e-generators
scenario "create generators (protobuf bodies)"

# kubectl's typed clients send protobuf: check that these requests really are protobuf.
# sent_protobuf METHOD LINE CMD...: runs CMD with -v=8; it must succeed, print LINE, and send
# its METHOD request with Content-Type application/vnd.kubernetes.protobuf.
sent_protobuf() {
    local method=$1 line=$2
    shift 2
    run "$@" -v=8
    local desc="$* sends a protobuf $method body and prints \"$line\""
    CMD="$* -v=8"
    if [[ $RC -eq 0 ]] && grep -qxF "$line" <<<"$OUT" &&
        grep -A12 "\"Request\" verb=\"$method\"\\|$method https://" <<<"$OUT" |
        grep -q "Content-Type: application/vnd.kubernetes.protobuf"; then
        pass "$desc"
    else
        fail "$desc" 0 "$line, and a $method request with Content-Type: application/vnd.kubernetes.protobuf" "(in the -v=8 log)"
    fi
}
sent_protobuf POST "namespace/$NS created" k create namespace $NS
expect 0 "Active" k get ns $NS -o 'jsonpath={.status.phase}'
expect 0 "namespace/e2e-gen-dry created (server dry run)" k create namespace e2e-gen-dry --dry-run=server
expect 1 'Error from server (NotFound): namespaces "e2e-gen-dry" not found' k get ns e2e-gen-dry
expect 1 'Error from server (AlreadyExists): namespaces "e2e-generators" already exists' k create namespace $NS
expect 0 "configmap/settings created" k create configmap settings -n $NS --from-literal=mode=fast --from-literal=level=3
expect 0 "fast 3" k get cm settings -n $NS -o 'jsonpath={.data.mode} {.data.level}'
expect 0 "secret/creds created" k create secret generic creds -n $NS --from-literal=password=s3cr3t
expect 0 "czNjcjN0 Opaque" k get secret creds -n $NS -o 'jsonpath={.data.password} {.type}'
sent_protobuf POST "deployment.apps/web created" k create deployment web -n $NS --image=nginx --replicas=2 --port=80
expect 0 "2 nginx 80 web RollingUpdate 25% 10 Always ClusterFirst" \
    k get deploy web -n $NS -o 'jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.spec.selector.matchLabels.app} {.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge} {.spec.revisionHistoryLimit} {.spec.template.spec.restartPolicy} {.spec.template.spec.dnsPolicy}'
# UP-TO-DATE is 2 once the deployment controller has created the ReplicaSet (it may be quick).
expect_re 0 '^NAME +READY +UP-TO-DATE +AVAILABLE +AGE
web +0/2 +[02] +0 +[0-9]+[smhd]$' k get deploy web -n $NS
expect 0 "service/web created" k create service clusterip web -n $NS --tcp=5678:8080
expect 0 "ClusterIP 5678 8080 TCP 5678-8080 web" \
    k get svc web -n $NS -o 'jsonpath={.spec.type} {.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.ports[0].protocol} {.spec.ports[0].name} {.spec.selector.app}'
expect 0 "serviceaccount/robot created" k create serviceaccount robot -n $NS
expect 0 "serviceaccount/robot" k get sa robot -n $NS -o name
expect 0 "job.batch/once created" k create job once -n $NS --image=busybox -- echo hi
expect 0 "busybox echo hi Never" \
    k get job once -n $NS -o 'jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].command[*]} {.spec.template.spec.restartPolicy}'
expect 0 "cronjob.batch/nightly created" k create cronjob nightly -n $NS --image=busybox --schedule='0 3 * * *' -- date
expect 0 "0 3 * * * OnFailure date Allow" \
    k get cronjob nightly -n $NS -o 'jsonpath={.spec.schedule} {.spec.jobTemplate.spec.template.spec.restartPolicy} {.spec.jobTemplate.spec.template.spec.containers[0].command[*]} {.spec.concurrencyPolicy}'
expect 0 "role.rbac.authorization.k8s.io/pod-reader created" k create role pod-reader -n $NS --verb=get,list --resource=pods
expect 0 "get list pods" k get role pod-reader -n $NS -o 'jsonpath={.rules[0].verbs[*]} {.rules[0].resources[*]}'
expect 0 "rolebinding.rbac.authorization.k8s.io/read-pods created" k create rolebinding read-pods -n $NS --role=pod-reader --user=alice
expect 0 "Role pod-reader User alice" \
    k get rolebinding read-pods -n $NS -o 'jsonpath={.roleRef.kind} {.roleRef.name} {.subjects[0].kind} {.subjects[0].name}'
expect 0 "clusterrole.rbac.authorization.k8s.io/e2e-gen-reader created" k create clusterrole e2e-gen-reader --verb=get --resource=nodes
expect 0 "get nodes" k get clusterrole e2e-gen-reader -o 'jsonpath={.rules[0].verbs[*]} {.rules[0].resources[*]}'
expect 0 "clusterrolebinding.rbac.authorization.k8s.io/e2e-gen-read created" \
    k create clusterrolebinding e2e-gen-read --clusterrole=e2e-gen-reader --group=devs
expect 0 "ClusterRole e2e-gen-reader Group devs" \
    k get clusterrolebinding e2e-gen-read -o 'jsonpath={.roleRef.kind} {.roleRef.name} {.subjects[0].kind} {.subjects[0].name}'
expect 0 "resourcequota/quota created" k create quota quota -n $NS --hard=cpu=1,pods=2
expect 0 "1 2" k get quota quota -n $NS -o 'jsonpath={.spec.hard.cpu} {.spec.hard.pods}'
expect 0 "priorityclass.scheduling.k8s.io/e2e-gen-high created" k create priorityclass e2e-gen-high --value=1000 --description=high
expect 0 "1000 high PreemptLowerPriority" \
    k get priorityclass e2e-gen-high -o 'jsonpath={.value} {.description} {.preemptionPolicy}'
expect 0 "poddisruptionbudget.policy/web created" k create pdb web -n $NS --selector=app=web --min-available=1
expect 0 "1 web" k get pdb web -n $NS -o 'jsonpath={.spec.minAvailable} {.spec.selector.matchLabels.app}'
expect 0 "ingress.networking.k8s.io/web created" k create ingress web -n $NS --rule='foo.com/bar=web:8080'
expect 0 "foo.com /bar Exact web 8080" \
    k get ingress web -n $NS -o 'jsonpath={.spec.rules[0].host} {.spec.rules[0].http.paths[0].path} {.spec.rules[0].http.paths[0].pathType} {.spec.rules[0].http.paths[0].backend.service.name} {.spec.rules[0].http.paths[0].backend.service.port.number}'
# The same bodies from kubectl 1.32 (the dispatcher runs the binary of the server's minor).
KUBECTL_132=$(dirname "$(readlink -f "$(command -v "$KUBECTL")")")/kubectl.1.32
if [[ -x $KUBECTL_132 ]]; then
    k132() { "$KUBECTL_132" --kubeconfig "$KUBECONFIG_FILE" --request-timeout="$REQUEST_TIMEOUT" "$@"; }
    sent_protobuf POST "configmap/from-132 created" k132 create configmap from-132 -n $NS --from-literal=a=b
    expect 0 "b" k get cm from-132 -n $NS -o 'jsonpath={.data.a}'
    sent_protobuf POST "deployment.apps/web-132 created" k132 create deployment web-132 -n $NS --image=nginx
    expect 0 "1 nginx" k get deploy web-132 -n $NS -o 'jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}'
    expect 0 "service/web-132 created" k132 create service nodeport web-132 -n $NS --tcp=80:8080
    expect 0 "NodePort 80 8080" k get svc web-132 -n $NS -o 'jsonpath={.spec.type} {.spec.ports[0].port} {.spec.ports[0].targetPort}'
else
    echo "NOTE: no kubectl.1.32 beside $KUBECTL: the kubectl 1.32 checks do not run"
fi
expect 1 "error: failed to create deployment: Deployment.apps \"Bad\" is invalid: metadata.name: Invalid value: \"Bad\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')" \
    k create deployment Bad -n $NS --image=nginx
expect 0 "horizontalpodautoscaler.autoscaling/web autoscaled" k autoscale deployment web -n $NS --min=1 --max=5 --cpu-percent=80
expect 0 "Deployment web 1 5 80" \
    k get hpa web -n $NS -o 'jsonpath={.spec.scaleTargetRef.kind} {.spec.scaleTargetRef.name} {.spec.minReplicas} {.spec.maxReplicas} {.spec.metrics[0].resource.target.averageUtilization}'
# kubectl delete sends its DeleteOptions as JSON (typed clients' protobuf DeleteOptions are
# covered by apiserver/tests/protobuf.rs).
expect 0 'deployment.apps "web" deleted' k delete deployment web -n $NS
expect 1 'Error from server (NotFound): deployments.apps "web" not found' k get deploy web -n $NS
expect 0 'configmap "settings" deleted' k delete cm settings -n $NS
expect 0 'clusterrolebinding.rbac.authorization.k8s.io "e2e-gen-read" deleted
clusterrole.rbac.authorization.k8s.io "e2e-gen-reader" deleted
priorityclass.scheduling.k8s.io "e2e-gen-high" deleted' \
    k delete clusterrolebinding/e2e-gen-read clusterrole/e2e-gen-reader priorityclass/e2e-gen-high
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-apply
scenario "apply twice, apply --dry-run=server, diff"

new_ns $NS
expect 0 "deployment.apps/applied created" k apply -n $NS -f $TD/deployment-apply.yaml
sed -e 's/replicas: 2/replicas: 3/' -e '/name: sidecar/,$ s/busybox:1.36/busybox:1.37/' \
    $TD/deployment-apply.yaml >"$TMP/deployment-apply-2.yaml"
expect 0 "deployment.apps/applied configured (server dry run)" \
    k apply -n $NS -f "$TMP/deployment-apply-2.yaml" --dry-run=server
expect 0 "2 busybox:1.36" k get -n $NS deploy applied -o 'jsonpath={.spec.replicas} {.spec.template.spec.containers[1].image}'
expect_re 1 '^diff -u -N .*
@@ .* @@
(.*
)*-  replicas: 2
\+  replicas: 3
(.*
)*-        image: busybox:1\.36
\+        image: busybox:1\.37
' k diff -n $NS -f "$TMP/deployment-apply-2.yaml"
expect 0 "deployment.apps/applied configured" k apply -n $NS -f "$TMP/deployment-apply-2.yaml"
expect 0 "3 app=busybox:1.36 sidecar=busybox:1.37 A=1 8080" \
    k get -n $NS deploy applied -o 'jsonpath={.spec.replicas} {range .spec.template.spec.containers[*]}{.name}={.image} {end}{.spec.template.spec.containers[0].env[0].name}={.spec.template.spec.containers[0].env[0].value} {.spec.template.spec.containers[0].ports[0].containerPort}'
expect 0 "deployment.apps/applied unchanged" k apply -n $NS -f "$TMP/deployment-apply-2.yaml"
expect 0 "" k diff -n $NS -f "$TMP/deployment-apply-2.yaml"
# Dropping the sidecar from the manifest removes it from the object (a $patch: delete by name).
sed '/name: sidecar/,$d' "$TMP/deployment-apply-2.yaml" >"$TMP/deployment-apply-3.yaml"
expect 0 "deployment.apps/applied configured" k apply -n $NS -f "$TMP/deployment-apply-3.yaml"
expect 0 "app" k get -n $NS deploy applied -o 'jsonpath={.spec.template.spec.containers[*].name}'
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-ssa
scenario "server-side apply: create, no-op, conflicts, --force-conflicts, moving from client-side apply"

new_ns $NS
expect 0 "deployment.apps/applied serverside-applied" k apply --server-side -n $NS -f $TD/deployment-apply.yaml
# The deployment controller writes the status (and the revision annotation) after the create;
# the no-op check below compares resourceVersions once it has settled.
expect 0 "deployment.apps/applied condition met" k wait -n $NS deploy/applied --for=jsonpath='{.status.replicas}'=2 --timeout=60s
ssa_rv=$(k get -n $NS deploy applied -o 'jsonpath={.metadata.resourceVersion}')
expect 0 "deployment.apps/applied serverside-applied" k apply --server-side -n $NS -f $TD/deployment-apply.yaml
expect 0 "$ssa_rv" k get -n $NS deploy applied -o 'jsonpath={.metadata.resourceVersion}'
expect 0 "kubectl Apply" k get -n $NS deploy applied -o 'jsonpath={.metadata.managedFields[0].manager} {.metadata.managedFields[0].operation}'
expect_re 0 'f:containers:
 +k:\{"name":"app"\}:
 +\.: \{\}' k get -n $NS deploy applied -o yaml --show-managed-fields
sed -e 's/replicas: 2/replicas: 3/' $TD/deployment-apply.yaml >"$TMP/deployment-ssa-3.yaml"
expect_re 1 '^error: Apply failed with 1 conflict: conflict with "kubectl": \.spec\.replicas
Please review the fields above--they currently have other managers\. Here
are the ways you can resolve this warning:' \
    k apply --server-side --field-manager=other -n $NS -f "$TMP/deployment-ssa-3.yaml"
expect 0 "2" k get -n $NS deploy applied -o 'jsonpath={.spec.replicas}'
expect 0 "deployment.apps/applied serverside-applied" \
    k apply --server-side --field-manager=other --force-conflicts -n $NS -f "$TMP/deployment-ssa-3.yaml"
expect 0 "3" k get -n $NS deploy applied -o 'jsonpath={.spec.replicas}'
# kubectl scale is an Update of /scale by its own manager.
expect 0 "deployment.apps/applied scaled" k scale -n $NS deploy applied --replicas=4
expect_re 1 '^error: Apply failed with 1 conflict: conflict with "kubectl(-scale)?" with subresource "scale" using apps/v1: \.spec\.replicas' \
    k apply --server-side --field-manager=other -n $NS -f "$TMP/deployment-ssa-3.yaml"
# An object made by client-side apply moves to server-side apply without conflicts, and
# kubectl hands the client-side manager's fields to its own Apply entry.
expect 0 "configmap/csa created" k apply -n $NS -f $TD/configmap-csa.yaml
sed -e 's/color: blue/color: red/' $TD/configmap-csa.yaml >"$TMP/configmap-csa-2.yaml"
expect 0 "configmap/csa serverside-applied" k apply --server-side -n $NS -f "$TMP/configmap-csa-2.yaml"
expect 0 "red" k get -n $NS cm csa -o 'jsonpath={.data.color}'
# kubectl keeps the annotation under its own Apply manager, as against upstream.
expect 0 "kubectl:Apply kubectl-last-applied:Apply " k get -n $NS cm csa -o 'jsonpath={range .metadata.managedFields[*]}{.manager}:{.operation} {end}'
expect_re 0 '"color":"red"' k get -n $NS cm csa -o 'jsonpath={.metadata.annotations.kubectl\.kubernetes\.io/last-applied-configuration}'
# Dropping a key from the applied configuration removes it.
sed -e '/size: small/d' "$TMP/configmap-csa-2.yaml" >"$TMP/configmap-csa-3.yaml"
expect 0 "configmap/csa serverside-applied" k apply --server-side -n $NS -f "$TMP/configmap-csa-3.yaml"
expect 0 "red " k get -n $NS cm csa -o 'jsonpath={.data.color} {.data.size}'
expect 0 "deployment.apps/applied serverside-applied (server dry run)" \
    k apply --server-side --force-conflicts --dry-run=server -n $NS -f $TD/deployment-apply.yaml
expect 0 "4" k get -n $NS deploy applied -o 'jsonpath={.spec.replicas}'
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-smp
scenario "edit, set, patch, rollout restart"

new_ns $NS
expect 0 "deployment.apps/web created" kcreate -n $NS -f $TD/deployment.yaml
expect 0 "deployment.apps/web edited" \
    env EDITOR="sed -i -e s/replicas:\ 2/replicas:\ 4/" "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" edit -n $NS deploy/web
expect 0 "4" k get -n $NS deploy web -o 'jsonpath={.spec.replicas}'
expect 0 "Edit cancelled, no changes made." \
    env EDITOR=true "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" edit -n $NS deploy/web
expect 0 "deployment.apps/web image updated" k set image -n $NS deploy/web web=busybox:1.37
expect 0 "busybox:1.37 sleep 8080" \
    k get -n $NS deploy web -o 'jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].command[0]} {.spec.template.spec.containers[0].ports[0].containerPort}'
expect 0 "deployment.apps/web env updated" k set env -n $NS deploy/web FOO=bar BAZ=1
expect 0 "deployment.apps/web env updated" k set env -n $NS deploy/web FOO-
expect 0 "BAZ=1" k get -n $NS deploy web -o 'jsonpath={range .spec.template.spec.containers[0].env[*]}{.name}={.value}{end}'
expect 0 "deployment.apps/web resource requirements updated" \
    k set resources -n $NS deploy/web --limits=cpu=200m,memory=64Mi
expect 0 "200m 64Mi" k get -n $NS deploy web -o 'jsonpath={.spec.template.spec.containers[0].resources.limits.cpu} {.spec.template.spec.containers[0].resources.limits.memory}'
expect 0 "deployment.apps/web patched" \
    k patch -n $NS deploy web -p '{"spec":{"template":{"spec":{"containers":[{"name":"web","ports":[{"containerPort":9090}]}]}}}}'
expect 0 "9090 8080 busybox:1.37" \
    k get -n $NS deploy web -o 'jsonpath={.spec.template.spec.containers[0].ports[*].containerPort} {.spec.template.spec.containers[0].image}'
expect 0 "deployment.apps/web patched (no change)" \
    k patch -n $NS deploy web -p '{"spec":{"template":{"spec":{"containers":[{"name":"web","ports":[{"containerPort":9090}]}]}}}}'
expect 0 "deployment.apps/web patched" \
    k patch -n $NS deploy web --type=strategic -p '{"spec":{"template":{"spec":{"containers":[{"name":"web","$patch":"delete"},{"name":"only","image":"busybox:1.36"}]}}}}'
expect 0 "only" k get -n $NS deploy web -o 'jsonpath={.spec.template.spec.containers[*].name}'
expect 0 "deployment.apps/web patched" k patch -n $NS deploy web --type=merge -p '{"spec":{"replicas":1}}'
expect 0 "deployment.apps/web patched" \
    k patch -n $NS deploy web --type=json -p '[{"op":"replace","path":"/spec/replicas","value":5}]'
expect 0 "5" k get -n $NS deploy web -o 'jsonpath={.spec.replicas}'
expect 0 "deployment.apps/web restarted" k rollout restart -n $NS deploy/web
expect_re 0 '^[0-9]{4}-[0-9]{2}-[0-9]{2}T' \
    k get -n $NS deploy web -o 'jsonpath={.spec.template.metadata.annotations.kubectl\.kubernetes\.io/restartedAt}'
drop_ns $NS

# ---------------------------------------------------------------------------------------
scenario "cordon and uncordon"

expect 0 "node/e2e-cordon-node created" kcreate -f $TD/node.yaml
expect 0 "node/e2e-cordon-node cordoned" k cordon e2e-cordon-node
expect 0 "true" k get node e2e-cordon-node -o 'jsonpath={.spec.unschedulable}'
expect 0 "node/e2e-cordon-node already cordoned" k cordon e2e-cordon-node
expect 0 "node/e2e-cordon-node uncordoned" k uncordon e2e-cordon-node
expect 0 " 10.250.0.0/24" k get node e2e-cordon-node -o 'jsonpath={.spec.unschedulable} {.spec.podCIDR}'
expect 0 'node "e2e-cordon-node" deleted' k delete node e2e-cordon-node

# ---------------------------------------------------------------------------------------
scenario "explain"

expect_re 0 '^KIND: +Pod
VERSION: +v1

DESCRIPTION:
 +Pod is a collection of containers that can run on a host\. (.*
)*FIELDS:
  apiVersion	<string>
(.*
)*  metadata	<ObjectMeta>
 +Standard object.s metadata\. (.*
)*  spec	<PodSpec>
(.*
)*  status	<PodStatus>
' k explain pods
expect_re 0 '^GROUP: +apps
KIND: +Deployment
VERSION: +v1

FIELD: ports <\[\]ContainerPort>


DESCRIPTION:
 +List of ports to expose from the container\. (.*
)* +ContainerPort represents a network port in a single container\.
 +
FIELDS:
  containerPort	<integer> -required-
(.*
)*  protocol	<string>
' k explain deployment.spec.template.spec.containers.ports
expect_re 0 '^KIND: +Node
VERSION: +v1

FIELD: unschedulable <boolean>
' k explain node.spec.unschedulable
expect 1 'GROUP:      apps
KIND:       Deployment
VERSION:    v1

error: field "nope" does not exist' k explain deployment.spec.nope

# ---------------------------------------------------------------------------------------
NS=e2e-sched
scenario "scheduler binds pods and explains unschedulable ones"

new_ns $NS
cat >"$TMP/sched-node.yaml" <<'YAML'
apiVersion: v1
kind: Node
metadata:
  name: e2e-sched-node
  labels: {e2e-sched: "yes"}
status:
  allocatable: {cpu: "2", memory: 4Gi, pods: "110"}
  capacity: {cpu: "2", memory: 4Gi, pods: "110"}
  conditions: [{type: Ready, status: "True"}]
YAML
cat >"$TMP/sched-pods.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: placed}
spec:
  nodeSelector: {e2e-sched: "yes"}
  containers: [{name: c, image: minik8s-test/busybox:latest}]
---
apiVersion: v1
kind: Pod
metadata: {name: too-big}
spec:
  nodeSelector: {e2e-sched: "yes"}
  containers: [{name: c, image: minik8s-test/busybox:latest, resources: {requests: {cpu: "3"}}}]
YAML
expect 0 "node/e2e-sched-node created" kcreate -f "$TMP/sched-node.yaml"
expect 0 "pod/placed created
pod/too-big created" kcreate -n $NS -f "$TMP/sched-pods.yaml"
sched_bound() { [[ $(k get -n $NS pod placed -o 'jsonpath={.spec.nodeName}') == e2e-sched-node ]]; }
wait_for 30 sched_bound || true
expect 0 "e2e-sched-node True" k get -n $NS pod placed -o 'jsonpath={.spec.nodeName} {.status.conditions[?(@.type=="PodScheduled")].status}'
sched_unschedulable() { [[ $(k get -n $NS pod too-big -o 'jsonpath={.status.conditions[?(@.type=="PodScheduled")].reason}') == Unschedulable ]]; }
wait_for 30 sched_unschedulable || true
expect_re 0 '^0/[0-9]+ nodes are available: .*1 Insufficient cpu' k get -n $NS pod too-big -o 'jsonpath={.status.conditions[?(@.type=="PodScheduled")].message}'
sched_event() { k get -n $NS events -o 'jsonpath={.items[?(@.reason=="Scheduled")].message}' | grep -q placed; }
wait_for 30 sched_event || true
expect 0 "Successfully assigned $NS/placed to e2e-sched-node" k get -n $NS events -o 'jsonpath={.items[?(@.reason=="Scheduled")].message}'
expect 0 'node "e2e-sched-node" deleted' k delete node e2e-sched-node
NS=e2e-rollout
scenario "deployment rollout status, scale and undo"

# No kubelet makes pods ready here: a background loop plays its part through pods/status.
ready_loop() {
    while true; do
        for p in $(k get pods -n $NS -l app=web -o name 2>/dev/null); do
            k patch -n $NS "$p" --subresource=status --type=merge \
                -p '{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}' >/dev/null 2>&1 || true
        done
        sleep 0.3
    done
}
web_pods() { [[ $(k get pods -n $NS -l app=web --no-headers 2>/dev/null | wc -l) -eq $1 ]]; }
web_image() { [[ $(k get pods -n $NS -l app=web -o 'jsonpath={.items[*].spec.containers[0].image}' | tr ' ' '\n' | sort -u) == "$1" ]]; }

new_ns $NS
expect 0 "deployment.apps/web created" kcreate -n $NS -f $TD/deployment.yaml
ready_loop &
READY_PID=$!
expect_re 0 'deployment "web" successfully rolled out$' k rollout status deployment/web -n $NS --timeout=60s
expect 0 "1" k get deployment web -n $NS -o 'jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}'
expect 0 "deployment.apps/web patched" k patch deployment web -n $NS --type=json \
    -p '[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"busybox:1.37"}]'
expect_re 0 'deployment "web" successfully rolled out$' k rollout status deployment/web -n $NS --timeout=60s
expect 0 "2" k get deployment web -n $NS -o 'jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}'
wait_for 30 web_image busybox:1.37 || true
expect 0 "busybox:1.37" bash -c "$(printf '%q ' "$KUBECTL") --kubeconfig $(printf '%q' "$KUBECONFIG_FILE") get pods -n $NS -l app=web -o 'jsonpath={.items[*].spec.containers[0].image}' | tr ' ' '\n' | sort -u"
expect 0 "deployment.apps/web rolled back" k rollout undo deployment/web -n $NS
expect_re 0 'deployment "web" successfully rolled out$' k rollout status deployment/web -n $NS --timeout=60s
wait_for 30 web_image busybox:1.36 || true
expect 0 "busybox:1.36" bash -c "$(printf '%q ' "$KUBECTL") --kubeconfig $(printf '%q' "$KUBECONFIG_FILE") get pods -n $NS -l app=web -o 'jsonpath={.items[*].spec.containers[0].image}' | tr ' ' '\n' | sort -u"
expect 0 "3" k get deployment web -n $NS -o 'jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}'
expect 0 "deployment.apps/web scaled" k scale deployment web -n $NS --replicas=3
wait_for 30 web_pods 3 || true
expect_re 0 'deployment "web" successfully rolled out$' k rollout status deployment/web -n $NS --timeout=60s
expect 0 "3/3" k get deployment web -n $NS -o 'jsonpath={.status.readyReplicas}/{.status.replicas}'
kill "$READY_PID" 2>/dev/null || true
wait "$READY_PID" 2>/dev/null || true
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-rbac
scenario "rbac, service-account tokens and anonymous requests"

new_ns $NS
cat >"$TMP/rbac.yaml" <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: $NS}
---
apiVersion: v1
kind: Secret
metadata:
  name: reader-token
  namespace: $NS
  annotations: {kubernetes.io/service-account.name: reader}
type: kubernetes.io/service-account-token
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-view, namespace: $NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{kind: ServiceAccount, name: reader, namespace: $NS}]
EOF
expect 0 "serviceaccount/reader created
secret/reader-token created
rolebinding.rbac.authorization.k8s.io/reader-view created" kcreate -f "$TMP/rbac.yaml"
SA_TOKEN=$(k get secret reader-token -n $NS -o jsonpath='{.data.token}' | base64 -d)
kt() { "$KUBECTL" --server "https://127.0.0.1:$PORT" --certificate-authority "$TMP/ca.crt" --token "$SA_TOKEN" --request-timeout="$REQUEST_TIMEOUT" "$@"; }
wait_for 10 kt get pods -n $NS || true
expect 0 "No resources found in $NS namespace." kt get pods -n $NS
expect 1 "Error from server (Forbidden): secrets is forbidden: User \"system:serviceaccount:$NS:reader\" cannot list resource \"secrets\" in API group \"\" in the namespace \"$NS\"" kt get secrets -n $NS
expect 1 "Error from server (Forbidden): pods is forbidden: User \"system:serviceaccount:$NS:reader\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\"" kt get pods -n default
expect 0 "ok" curl -fsS --max-time 5 --cacert "$TMP/ca.crt" "https://127.0.0.1:$PORT/healthz"
expect 0 "403" curl -sS --max-time 5 -o /dev/null -w '%{http_code}' --cacert "$TMP/ca.crt" "https://127.0.0.1:$PORT/api/v1/namespaces/default/pods"
expect 0 "401" curl -sS --max-time 5 -o /dev/null -w '%{http_code}' --cacert "$TMP/ca.crt" -H "Authorization: Bearer not-a-token" "https://127.0.0.1:$PORT/version"
expect 0 "yes" kt auth can-i list pods -n $NS
expect 1 "no" kt auth can-i delete pods -n $NS
expect_re 0 "Username +system:serviceaccount:$NS:reader" kt auth whoami
k delete secret reader-token -n $NS >/dev/null
expect 1 "error: You must be logged in to the server (Unauthorized)" kt get pods -n $NS
drop_ns $NS

# ---------------------------------------------------------------------------------------
scenario "certificates: kubectl certificate approve and deny, then the certificate works"

csr_yaml() { # NAME CN: a client CSR for the kube-apiserver-client signer
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$TMP/$1.key" \
        -subj "/CN=$2/O=e2e-devs" -out "$TMP/$1.csr" 2>/dev/null
    cat <<YAML
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: $1}
spec:
  signerName: kubernetes.io/kube-apiserver-client
  usages: [digital signature, client auth]
  request: $(base64 -w0 <"$TMP/$1.csr")
YAML
}
csr_yaml e2e-carol carol >"$TMP/csr-carol.yaml"
csr_yaml e2e-dan dan >"$TMP/csr-dan.yaml"
expect 0 "certificatesigningrequest.certificates.k8s.io/e2e-carol created" kcreate -f "$TMP/csr-carol.yaml"
expect 0 "certificatesigningrequest.certificates.k8s.io/e2e-dan created" kcreate -f "$TMP/csr-dan.yaml"
expect_re 0 "^NAME +AGE +SIGNERNAME +REQUESTOR +REQUESTEDDURATION +CONDITION
e2e-carol +[0-9]+s +kubernetes.io/kube-apiserver-client +minik8s-admin +<none> +Pending$" k get csr e2e-carol
expect 0 "certificatesigningrequest.certificates.k8s.io/e2e-carol approved" k certificate approve e2e-carol
expect 0 "certificatesigningrequest.certificates.k8s.io/e2e-dan denied" k certificate deny e2e-dan
csr_issued() { [[ -n $(k get csr e2e-carol -o jsonpath='{.status.certificate}') ]]; }
wait_for 15 csr_issued || true
expect_re 0 "e2e-carol +[0-9]+s +kubernetes.io/kube-apiserver-client +minik8s-admin +<none> +Approved,Issued$" k get csr e2e-carol --no-headers
expect_re 0 "e2e-dan +[0-9]+s +kubernetes.io/kube-apiserver-client +minik8s-admin +<none> +Denied$" k get csr e2e-dan --no-headers
k get csr e2e-carol -o jsonpath='{.status.certificate}' | base64 -d >"$TMP/carol.crt"
kc() { "$KUBECTL" --server "https://127.0.0.1:$PORT" --certificate-authority "$TMP/ca.crt" --client-certificate "$TMP/carol.crt" --client-key "$TMP/e2e-carol.key" --request-timeout="$REQUEST_TIMEOUT" "$@"; }
expect_re 0 "Username +carol
Groups +\[e2e-devs system:authenticated\]" kc auth whoami
expect_re 1 "Forbidden.*User \"carol\" cannot (get|update) resource \"certificatesigningrequests" kc certificate approve e2e-dan
k delete csr e2e-carol e2e-dan >/dev/null

# ---------------------------------------------------------------------------------------
NS=e2e-sts
scenario "statefulset: ordered pods, stable names, claims, rollout status, scale"

new_ns $NS
cat >"$TMP/sts.yaml" <<'YAML'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: e2e-sts}}
  template:
    metadata: {labels: {app: e2e-sts}}
    spec:
      containers: [{name: c, image: minik8s-test/busybox:latest}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
YAML
# No kubelet makes pods ready here: a background loop plays its part through pods/status.
sts_ready_loop() {
    while true; do
        for p in $(k get pods -n $NS -l app=e2e-sts -o name 2>/dev/null); do
            k patch -n $NS "$p" --subresource=status --type=merge \
                -p '{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}' >/dev/null 2>&1 || true
        done
        sleep 0.3
    done
}
sts_pods() { [[ $(k get pods -n $NS -l app=e2e-sts -o name 2>/dev/null | tr '\n' ' ') == "$1" ]]; }
expect 0 "statefulset.apps/web created" kcreate -n $NS -f "$TMP/sts.yaml"
sts_ready_loop &
STS_READY_PID=$!
expect_re 0 'partitioned roll out complete: 2 new pods have been updated' k rollout status sts/web -n $NS --timeout=60s
expect 0 "pod/web-0
pod/web-1" k get pods -n $NS -l app=e2e-sts -o name
expect 0 "web-0 web web-0 0" k get pod web-0 -n $NS -o 'jsonpath={.spec.hostname} {.spec.subdomain} {.metadata.labels.statefulset\.kubernetes\.io/pod-name} {.metadata.labels.apps\.kubernetes\.io/pod-index}'
expect 0 "persistentvolumeclaim/www-web-0
persistentvolumeclaim/www-web-1" k get pvc -n $NS -o name
expect_re 0 '^NAME +READY +AGE
web +2/2 +' k get sts web -n $NS
STS_REV=$(k get sts web -n $NS -o 'jsonpath={.status.updateRevision}')
expect 0 "$STS_REV $STS_REV" k get pod web-1 -n $NS -o "jsonpath={.metadata.labels.controller-revision-hash} $STS_REV"
expect 0 "1 StatefulSet web" k get controllerrevisions -n $NS -o 'jsonpath={.items[0].revision} {.items[0].metadata.ownerReferences[0].kind} {.items[0].metadata.ownerReferences[0].name}'
expect 0 "statefulset.apps/web scaled" k scale sts web -n $NS --replicas=1
wait_for 30 sts_pods "pod/web-0 " || true
expect 0 "pod/web-0" k get pods -n $NS -l app=e2e-sts -o name
expect 0 "persistentvolumeclaim/www-web-0
persistentvolumeclaim/www-web-1" k get pvc -n $NS -o name
kill "$STS_READY_PID" 2>/dev/null || true
wait "$STS_READY_PID" 2>/dev/null || true
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-ds
scenario "daemonset: one pod per node, pinned for the scheduler"

new_ns $NS
cat >"$TMP/ds-node.yaml" <<'YAML'
apiVersion: v1
kind: Node
metadata:
  name: e2e-ds-node
  labels: {e2e-ds: "yes"}
status:
  allocatable: {cpu: "2", memory: 4Gi, pods: "110"}
  capacity: {cpu: "2", memory: 4Gi, pods: "110"}
  conditions: [{type: Ready, status: "True"}]
YAML
cat >"$TMP/ds.yaml" <<'YAML'
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: e2e-ds}}
  template:
    metadata: {labels: {app: e2e-ds}}
    spec:
      nodeSelector: {e2e-ds: "yes"}
      containers: [{name: c, image: minik8s-test/busybox:latest}]
YAML
expect 0 "node/e2e-ds-node created" kcreate -f "$TMP/ds-node.yaml"
expect 0 "daemonset.apps/agent created" kcreate -n $NS -f "$TMP/ds.yaml"
ds_bound() { [[ $(k get pods -n $NS -l app=e2e-ds -o 'jsonpath={.items[*].spec.nodeName}') == e2e-ds-node ]]; }
wait_for 30 ds_bound || true
expect 0 "e2e-ds-node" k get pods -n $NS -l app=e2e-ds -o 'jsonpath={.items[*].spec.nodeName}'
expect 0 "metadata.name In e2e-ds-node" k get pods -n $NS -l app=e2e-ds -o 'jsonpath={.items[0].spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].key} {.items[0].spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].operator} {.items[0].spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0]}'
ds_status() { [[ $(k get ds agent -n $NS -o 'jsonpath={.status.desiredNumberScheduled}/{.status.currentNumberScheduled}') == 1/1 ]]; }
wait_for 30 ds_status || true
expect_re 0 '^NAME +DESIRED +CURRENT +READY +UP-TO-DATE +AVAILABLE +NODE SELECTOR +AGE
agent +1 +1 +0 +1 +0 +e2e-ds=yes +' k get ds agent -n $NS
expect 0 'node "e2e-ds-node" deleted' k delete node e2e-ds-node
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-cron
scenario "cronjob: create, manual job from it, scheduled job"

new_ns $NS
expect 0 "cronjob.batch/hello created" k create cronjob hello -n $NS --image=minik8s-test/busybox:latest --schedule='* * * * *' -- true
expect 0 "* * * * * Allow" k get cronjob hello -n $NS -o 'jsonpath={.spec.schedule} {.spec.concurrencyPolicy}'
expect 0 "job.batch/manual created" k create job manual -n $NS --from=cronjob/hello
expect 0 "CronJob hello manual" k get job manual -n $NS -o 'jsonpath={.metadata.ownerReferences[0].kind} {.metadata.ownerReferences[0].name} {.metadata.annotations.cronjob\.kubernetes\.io/instantiate}'
cron_fired() { [[ -n $(k get cronjob hello -n $NS -o 'jsonpath={.status.lastScheduleTime}') ]]; }
# The schedule fires at the next minute boundary.
wait_for 75 cron_fired || true
expect_re 0 '^hello-[0-9]+$' k get cronjob hello -n $NS -o 'jsonpath={.status.active[0].name}'
expect_re 0 '^NAME +SCHEDULE +TIMEZONE +SUSPEND +ACTIVE +LAST SCHEDULE +AGE
hello +\* \* \* \* \* +<none> +False +1 +' k get cronjob hello -n $NS
expect 0 "cronjob.batch/hello patched" k patch cronjob hello -n $NS --type=merge -p '{"spec":{"suspend":true}}'
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-crd
scenario "custom resources: CRD, established, apply, printer columns, short name, scale, delete"

new_ns $NS
expect 0 "customresourcedefinition.apiextensions.k8s.io/gizmos.e2e.example.com created" k apply -f $TD/crd-gizmo.yaml
expect 0 "customresourcedefinition.apiextensions.k8s.io/gizmos.e2e.example.com condition met" \
    k wait --for condition=established --timeout=10s crd/gizmos.e2e.example.com
gizmos_served() { k get --raw "/apis/e2e.example.com/v1/namespaces/$NS/gizmos"; }
wait_for 5 gizmos_served || true
expect 0 "gizmo.e2e.example.com/g1 created" k apply -n $NS -f $TD/gizmo.yaml
expect 0 "gizmo.e2e.example.com/g1 unchanged" k apply -n $NS -f $TD/gizmo.yaml
expect 0 "blue" k get gizmo g1 -n $NS -o 'jsonpath={.spec.color}'
expect_re 0 '^NAME +REPLICAS +COLOR +AGE
g1 +2 +blue +[0-9]+s$' k get gizmos -n $NS
expect_re 0 '^NAME +REPLICAS +COLOR +AGE
g1 +2 +blue +[0-9]+s$' k get gz -n $NS
expect 0 "gizmo.e2e.example.com/g1 scaled" k scale gizmo g1 -n $NS --replicas=4
expect 0 "4" k get gz g1 -n $NS -o 'jsonpath={.spec.replicas}'
expect 0 "gizmo.e2e.example.com/g2 serverside-applied" k apply --server-side -n $NS -f $TD/gizmo-ssa.yaml
expect 0 "3 kubectl" k get gizmo g2 -n $NS -o 'jsonpath={.spec.replicas} {.metadata.managedFields[0].manager}'
expect_re 0 '^NAME +SHORTNAMES +APIVERSION +NAMESPACED +KIND
gizmos +gz +e2e\.example\.com/v1 +true +Gizmo$' k api-resources --api-group=e2e.example.com
expect_re 0 '^GROUP: +e2e\.example\.com
KIND: +Gizmo
VERSION: +v1
.*
  metadata	<ObjectMeta>
.*
  spec	<Object>' k explain gizmos
expect_re 0 'FIELD: replicas <integer>' k explain gizmo.spec.replicas
expect_re 0 'FIELD: uid <string>' k explain gz.metadata.uid
# The same from the protobuf /openapi/v2, where custom resources are too.
expect_re 0 '^KIND: +Gizmo
VERSION: +e2e\.example\.com/v1

RESOURCE: spec <Object>
.*
FIELDS:
   color	<string>

   replicas	<integer>' k explain gizmo.spec --output=plaintext-openapiv2
sed -e 's/name: g1/name: bad/' -e 's/replicas: 2/replicas: two/' $TD/gizmo.yaml >"$TMP/gizmo-bad.yaml"
expect_re 1 'The Gizmo "bad" is invalid: spec\.replicas: Invalid value: "string": spec\.replicas in body must be of type integer: "string"' \
    k apply -n $NS -f "$TMP/gizmo-bad.yaml"
expect 0 'customresourcedefinition.apiextensions.k8s.io "gizmos.e2e.example.com" deleted' k delete crd gizmos.e2e.example.com
expect 1 "Error from server (NotFound): the server could not find the requested resource" \
    k get --raw "/apis/e2e.example.com/v1/namespaces/$NS/gizmos"
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-dir
scenario "apply -f a directory: deployment, service, configmap, a CRD and its custom resources"

new_ns $NS
# As upstream: kubectl maps every object before it applies any, so on the first try the
# custom resources of a CRD created in the same run have no mapping yet; everything else is
# applied. The second run creates them; the third changes nothing.
expect_re 1 'customresourcedefinition\.apiextensions\.k8s\.io/widgets\.app\.example\.com created
configmap/x created
deployment\.apps/web created
service/web created
resource mapping not found for name: "small" namespace: "" from "e2e/testdata/app/1-widgets\.yaml": no matches for kind "Widget" in version "app\.example\.com/v1"
ensure CRDs are installed first
resource mapping not found for name: "large" namespace: "" from "e2e/testdata/app/1-widgets\.yaml": no matches for kind "Widget" in version "app\.example\.com/v1"
ensure CRDs are installed first$' k apply -n $NS -f $TD/app
expect 0 "customresourcedefinition.apiextensions.k8s.io/widgets.app.example.com unchanged
widget.app.example.com/small created
widget.app.example.com/large created
configmap/x unchanged
deployment.apps/web unchanged
service/web unchanged" k apply -n $NS -f $TD/app
expect 0 "customresourcedefinition.apiextensions.k8s.io/widgets.app.example.com unchanged
widget.app.example.com/small unchanged
widget.app.example.com/large unchanged
configmap/x unchanged
deployment.apps/web unchanged
service/web unchanged" k apply -n $NS -f $TD/app
# A CRD with printer columns gets exactly those (no default AGE), as upstream.
expect_re 0 '^NAME +SIZE
large +10
small +1$' k get -n $NS widgets
expect 0 'customresourcedefinition.apiextensions.k8s.io "widgets.app.example.com" deleted' k delete crd widgets.app.example.com
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-views
scenario "get all, --show-labels, -o wide, --sort-by, describe"

new_ns $NS
expect 0 "deployment.apps/web created" kcreate -n $NS -f $TD/deployment.yaml
expect 0 "service/web created" kcreate -n $NS -f $TD/service.yaml
for p in c a b; do
    # order: a=1, c=2, b=3, for --sort-by on a label
    order=$(case $p in a) echo 1 ;; c) echo 2 ;; *) echo 3 ;; esac)
    sed -e "s/name: web/name: $p/" -e "s/app: web/app: web\n    order: \"$order\"/" $TD/pod.yaml >"$TMP/pod-$p.yaml"
    expect 0 "pod/$p created" kcreate -n $NS -f "$TMP/pod-$p.yaml"
done
wait_for 30 bash -c "[[ \$(\"$KUBECTL\" --kubeconfig \"$KUBECONFIG_FILE\" get -n $NS pods -l pod-template-hash -o name | wc -l) -eq 2 ]]"
expect_re 0 '^NAME +READY +STATUS +RESTARTS +AGE
pod/a +0/1 +Pending +0 +[0-9]+[smhd]
pod/b +0/1 +Pending +0 +[0-9]+[smhd]
pod/c +0/1 +Pending +0 +[0-9]+[smhd]
pod/web-[a-z0-9]+-[a-z0-9]+ +0/1 +Pending +0 +[0-9]+[smhd]
pod/web-[a-z0-9]+-[a-z0-9]+ +0/1 +Pending +0 +[0-9]+[smhd]

NAME +TYPE +CLUSTER-IP +EXTERNAL-IP +PORT\(S\) +AGE
service/web +ClusterIP +10\.[0-9.]+ +<none> +80/TCP +[0-9]+[smhd]

NAME +READY +UP-TO-DATE +AVAILABLE +AGE
deployment\.apps/web +0/2 +2 +0 +[0-9]+[smhd]

NAME +DESIRED +CURRENT +READY +AGE
replicaset\.apps/web-[a-z0-9]+ +2 +2 +0 +[0-9]+[smhd]$' k get all -n $NS
expect_re 0 '^NAME +READY +STATUS +RESTARTS +AGE +LABELS
a +0/1 +Pending +0 +[0-9]+[smhd] +app=web,order=1$' k get -n $NS pod a --show-labels
expect_re 0 '^NAME +READY +STATUS +RESTARTS +AGE +IP +NODE +NOMINATED NODE +READINESS GATES
a +0/1 +Pending +0 +[0-9]+[smhd] +<none> +<none> +<none> +<none>$' k get -n $NS pod a -o wide
expect_re 0 '^NAME +READY +UP-TO-DATE +AVAILABLE +AGE +CONTAINERS +IMAGES +SELECTOR
web +0/2 +2 +0 +[0-9]+[smhd] +web +busybox:1\.36 +app=web$' k get -n $NS deploy -o wide
expect 0 "pod/a
pod/b
pod/c" k get -n $NS pods a b c --sort-by=.metadata.name -o name
expect 0 "pod/a
pod/c
pod/b" k get -n $NS pods a b c --sort-by='{.metadata.labels.order}' -o name
expect_re 0 '^Name: +web
Namespace: +e2e-views
CreationTimestamp: .*
Labels: +app=web
Annotations: +deployment\.kubernetes\.io/revision: 1
Selector: +app=web
Replicas: +2 desired \| 2 updated \| 2 total \| 0 available \| 2 unavailable
StrategyType: +RollingUpdate
MinReadySeconds: +0
RollingUpdateStrategy: +25% max unavailable, 25% max surge
Pod Template:
.*
Conditions:
  Type +Status +Reason
  ---- +------ +------
  Available +False +MinimumReplicasUnavailable
  Progressing +True +ReplicaSetUpdated
OldReplicaSets: +<none>
NewReplicaSet: +web-[a-z0-9]+ \(2/2 replicas created\)
Events:
  Type +Reason +Age +From +Message
  ---- +------ +---- +---- +-------
  Normal +ScalingReplicaSet +[0-9]+[smhd] +deployment-controller +Scaled up replica set web-[a-z0-9]+ from 0 to 2$' k describe -n $NS deploy web
expect_re 0 '^Name: +web
Namespace: +e2e-views
Labels: +app=web
Annotations: +<none>
Selector: +app=web
Type: +ClusterIP
IP Family Policy: +SingleStack
IP Families: +IPv4
IP: +10\.[0-9.]+
IPs: +10\.[0-9.]+
Port: +http +80/TCP
TargetPort: +8080/TCP
Endpoints: +
Session Affinity: +None
Internal Traffic Policy: +Cluster
Events: +<none>$' k describe -n $NS svc web
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-workflow
scenario "rollout history|pause|resume, taint, create token, delete --cascade and --grace-period"

new_ns $NS
expect 0 "deployment.apps/web created" kcreate -n $NS -f $TD/deployment.yaml
expect 0 "deployment.apps/web image updated" k set image -n $NS deploy/web web=busybox:1.37
expect_re 0 '^deployment\.apps/web 
REVISION  CHANGE-CAUSE
1         <none>
2         <none>$' k rollout history -n $NS deploy/web
expect_re 0 '^deployment\.apps/web with revision #2
Pod Template:
  Labels:	app=web
	pod-template-hash=[a-z0-9]+
  Containers:
   web:
    Image:	busybox:1\.37' k rollout history -n $NS deploy/web --revision=2
expect 0 "deployment.apps/web paused" k rollout pause -n $NS deploy/web
expect 0 "true DeploymentPaused" k get -n $NS deploy web -o 'jsonpath={.spec.paused} {.status.conditions[?(@.type=="Progressing")].reason}'
expect 0 "deployment.apps/web image updated" k set image -n $NS deploy/web web=busybox:1.38
expect 0 "2" k get -n $NS rs -l app=web -o go-template='{{len .items}}'
expect 1 'error: deployments.apps "web" is already paused' k rollout pause -n $NS deploy/web
expect 0 "deployment.apps/web resumed" k rollout resume -n $NS deploy/web
wait_for 30 bash -c "[[ \$(\"$KUBECTL\" --kubeconfig \"$KUBECONFIG_FILE\" get -n $NS rs -l app=web -o name | wc -l) -eq 3 ]]"
expect 1 'error: deployments.apps "web" is not paused' k rollout resume -n $NS deploy/web
expect_re 0 'REVISION  CHANGE-CAUSE
1         <none>
2         <none>
3         <none>' k rollout history -n $NS deploy/web

sed -e 's/e2e-cordon-node/e2e-taint-node/' $TD/node.yaml >"$TMP/node-taint.yaml"
expect 0 "node/e2e-taint-node created" kcreate -f "$TMP/node-taint.yaml"
expect 0 "node/e2e-taint-node tainted" k taint nodes e2e-taint-node dedicated=gpu:NoSchedule
expect 1 "error: node e2e-taint-node already has dedicated taint(s) with same effect(s) and --overwrite is false" k taint nodes e2e-taint-node dedicated=gpu:NoSchedule
expect 0 "node/e2e-taint-node modified" k taint nodes e2e-taint-node dedicated=cpu:NoSchedule --overwrite
expect 0 'dedicated=cpu:NoSchedule' k get node e2e-taint-node -o 'jsonpath={range .spec.taints[*]}{.key}={.value}:{.effect}{end}'
expect 0 "node/e2e-taint-node untainted" k taint nodes e2e-taint-node dedicated:NoSchedule-
expect 1 'error: taint "dedicated:NoSchedule" not found' k taint nodes e2e-taint-node dedicated:NoSchedule-
expect 0 'node "e2e-taint-node" deleted' k delete node e2e-taint-node

expect 0 "serviceaccount/robot created" k create sa -n $NS robot
expect_re 0 '^eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$' k create token -n $NS robot --duration=10m
expect 1 'error: failed to create token: serviceaccounts "nope" not found' k create token -n $NS nope

expect 0 'deployment.apps "web" deleted' k delete -n $NS deploy web --cascade=orphan
expect 0 "3" k get -n $NS rs -l app=web -o go-template='{{len .items}}'
wait_for 30 bash -c "[[ -z \$(\"$KUBECTL\" --kubeconfig \"$KUBECONFIG_FILE\" get -n $NS rs -l app=web -o jsonpath='{.items[*].metadata.ownerReferences}') ]]"
expect 0 "" k get -n $NS rs -l app=web -o jsonpath='{.items[*].metadata.ownerReferences}'
expect_re 0 'replicaset\.apps "web-[a-z0-9]+" deleted' k delete -n $NS rs -l app=web --cascade=foreground
sed -e "s/name: web/name: quick/" $TD/pod.yaml >"$TMP/pod-quick.yaml"
expect 0 "pod/quick created" kcreate -n $NS -f "$TMP/pod-quick.yaml"
expect 0 'Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely.
pod "quick" force deleted' k delete -n $NS pod quick --grace-period=0 --force
expect 1 'Error from server (NotFound): pods "quick" not found' k get -n $NS pod quick
drop_ns $NS

# ---------------------------------------------------------------------------------------
NS=e2e-describe
scenario "describe pod|replicaset|namespace|node, api-versions, api-resources, custom-columns, wait, delete --wait, apply --prune"

new_ns $NS
expect 0 "deployment.apps/web created" kcreate -n $NS -f $TD/deployment.yaml
expect 0 "pod/web created" kcreate -n $NS -f $TD/pod.yaml
expect 0 "deployment.apps/web condition met" k wait -n $NS deploy/web --for=jsonpath='{.status.replicas}'=2 --timeout=60s
expect_re 0 '^Name: +web
Namespace: +e2e-describe
Priority: +0
Service Account: +default
Node: +<none>
Labels: +app=web
Annotations: +<none>
Status: +Pending
IP: +
IPs: +<none>
Containers:
  web:
    Image: +busybox:1\.36
.*
    Mounts:
      /var/run/secrets/kubernetes\.io/serviceaccount from kube-api-access-[a-z0-9]+ \(ro\)
Conditions:
  Type +Status
  PodScheduled +False 
Volumes:
  kube-api-access-[a-z0-9]+:
    Type: +Projected \(a volume that contains injected data from multiple sources\)
    TokenExpirationSeconds: +3607
    ConfigMapName: +kube-root-ca\.crt
    (Optional: +false|ConfigMapOptional: +<nil>)
    DownwardAPI: +true
QoS Class: +BestEffort
Node-Selectors: +<none>
Tolerations: +node\.kubernetes\.io/not-ready:NoExecute op=Exists for 300s
 +node\.kubernetes\.io/unreachable:NoExecute op=Exists for 300s
Events:
  Type +Reason +Age +From +Message
  ---- +------ +---- +---- +-------
  Warning +FailedScheduling +[0-9]+[smhd] +default-scheduler +0/[0-9]+ nodes are available' k describe -n $NS pod web
# kubectl 1.32 prints the projected volume's ConfigMapOptional as <nil>, 1.33 Optional: false.
# Two pods, two events: repeats are counted only when the message is the same, as upstream.
expect_re 0 '^Name: +web-[a-z0-9]+
Namespace: +e2e-describe
Selector: +app=web,pod-template-hash=[a-z0-9]+
Labels: +app=web
 +pod-template-hash=[a-z0-9]+
Annotations: +deployment\.kubernetes\.io/desired-replicas: 2
 +deployment\.kubernetes\.io/max-replicas: 3
 +deployment\.kubernetes\.io/revision: 1
Controlled By: +Deployment/web
Replicas: +2 current / 2 desired
Pods Status: +0 Running / 2 Waiting / 0 Succeeded / 0 Failed
Pod Template:
.*
Events:
  Type +Reason +Age +From +Message
  ---- +------ +---- +---- +-------
  Normal +SuccessfulCreate +[0-9]+[smhd] +replicaset-controller +Created pod: web-[a-z0-9]+-[a-z0-9]+
  Normal +SuccessfulCreate +[0-9]+[smhd] +replicaset-controller +Created pod: web-[a-z0-9]+-[a-z0-9]+$' k describe -n $NS rs
expect 0 "Name:         e2e-describe
Labels:       e2e.minik8s.io/suite=kubectl
              kubernetes.io/metadata.name=e2e-describe
Annotations:  <none>
Status:       Active

No resource quota.

No LimitRange resource." k describe ns $NS
sed -e 's/e2e-cordon-node/e2e-describe-node/' $TD/node.yaml >"$TMP/node-describe.yaml"
expect 0 "node/e2e-describe-node created" kcreate -f "$TMP/node-describe.yaml"
expect_re 0 '^Name: +e2e-describe-node
Roles: +<none>
Labels: +e2e\.minik8s\.io/suite=kubectl
Annotations: +<none>
CreationTimestamp: .*
Taints: +<none>
Unschedulable: +false
Lease: +Failed to get lease: leases\.coordination\.k8s\.io "e2e-describe-node" not found
.*
PodCIDR: +10\.250\.0\.0/24
Non-terminated Pods: +\(0 in total\)
.*
Events: +<none>$' k describe node e2e-describe-node
expect 0 'node "e2e-describe-node" deleted' k delete node e2e-describe-node --wait=true

expect_re 0 '^admissionregistration\.k8s\.io/v1
apiextensions\.k8s\.io/v1
apps/v1
autoscaling/v1
autoscaling/v2
batch/v1
.*
v1$' k api-versions
expect_re 0 '^NAME +SHORTNAMES +APIVERSION +NAMESPACED +KIND +VERBS +CATEGORIES
controllerrevisions +apps/v1 +true +ControllerRevision +create,delete,deletecollection,get,list,patch,update,watch *
daemonsets +ds +apps/v1 +true +DaemonSet +create,delete,deletecollection,get,list,patch,update,watch +all
deployments +deploy +apps/v1 +true +Deployment +create,delete,deletecollection,get,list,patch,update,watch +all
replicasets +rs +apps/v1 +true +ReplicaSet +create,delete,deletecollection,get,list,patch,update,watch +all
statefulsets +sts +apps/v1 +true +StatefulSet +create,delete,deletecollection,get,list,patch,update,watch +all$' k api-resources -o wide --api-group=apps
expect_re 0 '^NAME +SHORTNAMES +APIVERSION +NAMESPACED +KIND
(.*
)*namespaces +ns +v1 +false +Namespace
nodes +no +v1 +false +Node
' k api-resources --namespaced=false
expect 0 "NAME   REPLICAS   IMAGE
web    2          busybox:1.36" k get -n $NS deploy -o custom-columns=NAME:.metadata.name,REPLICAS:.spec.replicas,IMAGE:.spec.template.spec.containers[0].image

expect 0 "configmap/gone created" k create cm gone -n $NS --from-literal=a=b
( sleep 1; k delete cm gone -n $NS --wait=false >/dev/null 2>&1 ) &
BG_PIDS+=($!)
expect 0 "configmap/gone condition met" k wait -n $NS --for=delete cm/gone --timeout=30s
expect 0 'deployment.apps "web" deleted' k delete -n $NS deploy web --wait=true
expect 1 'Error from server (NotFound): deployments.apps "web" not found' k get -n $NS deploy web

expect 0 "configmap/p1 created
configmap/p2 created" k apply -n $NS -f $TD/prune -l prune=yes --prune --prune-allowlist=core/v1/ConfigMap
expect 0 "configmap/p1 unchanged
configmap/p2 pruned" k apply -n $NS -f $TD/prune/p1.yaml -l prune=yes --prune --prune-allowlist=core/v1/ConfigMap
expect 0 "configmap/p1" k get -n $NS cm -l prune=yes -o name
drop_ns $NS

# ---------------------------------------------------------------------------------------
scenario "explain from the protobuf /openapi/v2"

expect 0 "KIND:     Deployment
VERSION:  apps/v1

FIELD:    replicas <integer>

DESCRIPTION:
     Number of desired pods. This is a pointer to distinguish between explicit
     zero and not specified. Defaults to 1." k explain deployment.spec.replicas --output=plaintext-openapiv2
expect_re 0 'FIELDS:
   containerPort	<integer> -required-' k explain pods.spec.containers.ports --output=plaintext-openapiv2

# ---------------------------------------------------------------------------------------
echo
if ((FAILED > 0)); then
    echo "failed checks:"
    printf '  %s\n' "${FAILED_NAMES[@]}"
    [[ -n ${E2E_KEEP:-} ]] || echo "set E2E_KEEP=1 to keep the server log and the dumped YAML"
fi
[[ -z ${E2E_KEEP:-} ]] || echo "kept $TMP (server log: $TMP/server.log)"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
