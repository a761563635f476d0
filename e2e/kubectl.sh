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
# ClusterIP allocation from --service-cidr comes with the service-networking issue;
# until then a Service has no clusterIP.
expect_re 0 '^NAME +TYPE +CLUSTER-IP +EXTERNAL-IP +PORT\(S\) +AGE
web +ClusterIP +(10\.[0-9.]+|<none>) +<none> +80/TCP +[0-9]+[smhd]$' k get -n $NS svc
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
web +0/2 +0 +0 +[0-9]+[smhd]$' k get -n $NS deployments.apps
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
expect 0 "pod/web
service/web
deployment.apps/web" k get -n $NS po,svc,deploy -o name
expect 0 "pod/web
service/web
deployment.apps/web" k get -n $NS pods/web services/web deployments/web -o name
expect_re 0 '^NAME +READY +STATUS +RESTARTS +AGE
pod/web +0/1 +Pending +0 +[0-9]+[smhd]

NAME +TYPE +CLUSTER-IP +EXTERNAL-IP +PORT\(S\) +AGE
service/web +ClusterIP +([0-9.]+|<none>) +<none> +80/TCP +[0-9]+[smhd]

NAME +READY +UP-TO-DATE +AVAILABLE +AGE
deployment.apps/web +0/2 +0 +0 +[0-9]+[smhd]$' k get -n $NS po,svc,deploy
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
CHUNK_LOG=$(grep '"Response" verb="GET"' <<<"$OUT" | grep 'limit=2' || true)
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
k delete secret reader-token -n $NS >/dev/null
expect 1 "error: You must be logged in to the server (Unauthorized)" kt get pods -n $NS
drop_ns $NS

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
