#!/usr/bin/env bash
# The test command: dependencies, formatting, lints, unit and integration tests (which start
# etcd themselves), then the stock-kubectl end-to-end scenarios. Stops at the first failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

start=$SECONDS
current="setup"
section() {
    current=$1
    printf '\n==== %s  [%ds]\n' "$current" "$((SECONDS - start))"
}
finish() {
    local rc=$?
    if ((rc == 0)); then
        printf '\n==== PASSED in %ds\n' "$((SECONDS - start))"
    else
        printf '\n==== FAILED in "%s" (exit %d) after %ds\n' "$current" "$rc" "$((SECONDS - start))" >&2
    fi
}
trap finish EXIT
# Killed from outside (a CI time limit, ^C): report a failure, not a pass.
trap 'echo "killed by a signal" >&2; exit 143' TERM INT HUP

section "dependencies"
bash hack/install-deps.sh
if [[ -d $HOME/.cargo/bin ]]; then export PATH=$HOME/.cargo/bin:$PATH; fi

section "docker engine"
bash hack/docker.sh

section "cargo fmt"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

section "cargo test: build"
cargo test --workspace --no-run

# Every test bounds its own waits; this bounds the whole run, so a hang fails with the name of
# the test binary that was running instead of running into CI's own time limit.
section "cargo test"
timeout --signal=TERM --kill-after=30s "${TEST_TIMEOUT:-40m}" cargo test --workspace

if [[ -f e2e/kubectl.sh ]]; then
    # The scenarios run with each kubectl version asked for (E2E_KUBECTLS, space-separated),
    # by default kubectl 1.32 and 1.33 when the machine has them side by side (the Google
    # Cloud SDK package ships kubectl.1.27 ... kubectl.1.33), else the kubectl on PATH.
    if [[ -z ${E2E_KUBECTLS:-} ]]; then
        for v in 1.32 1.33; do
            for dir in /usr/lib/google-cloud-sdk/bin "$(dirname "$(command -v kubectl 2>/dev/null || echo /nonexistent)")"; do
                if [[ -x $dir/kubectl.$v ]]; then
                    E2E_KUBECTLS+="$dir/kubectl.$v "
                    break
                fi
            done
        done
        E2E_KUBECTLS=${E2E_KUBECTLS:-kubectl}
    fi
    for kc in $E2E_KUBECTLS; do
        section "e2e: kubectl ($kc)"
        KUBECTL=$kc timeout --signal=TERM --kill-after=30s "${E2E_TIMEOUT:-30m}" bash e2e/kubectl.sh
    done
else
    section "e2e: kubectl (skipped: e2e/kubectl.sh not present)"
fi
