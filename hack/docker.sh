#!/usr/bin/env bash
# Makes sure a Docker Engine answers on /var/run/docker.sock: starts Debian's dockerd in the
# background when none is running (its log: ${MINIK8S_DOCKERD_LOG:-/tmp/minik8s-dockerd.log}).
# The kubelet runs pods on it. Installed by hack/install-deps.sh (package docker.io).
set -euo pipefail

say() { printf 'docker: %s\n' "$*"; }

if docker info >/dev/null 2>&1; then
    say "engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null) is running"
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
    say "dockerd not found: install Debian's docker.io (hack/install-deps.sh does)"
    exit 1
fi
if [[ $(id -u) != 0 ]]; then
    say "no Docker Engine answers and starting dockerd needs root: run 'sudo dockerd &' or 'sudo systemctl start docker'"
    exit 1
fi
log=${MINIK8S_DOCKERD_LOG:-/tmp/minik8s-dockerd.log}
# A dockerd killed without cleanup leaves its pid file behind and refuses to start again.
if [[ -f /var/run/docker.pid ]] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi
say "starting dockerd (log: $log)"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
        say "engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null) is running"
        exit 0
    fi
    sleep 0.5
done
say "dockerd did not answer within 30 s; its log ends with:"
tail -n 20 "$log" >&2 || true
exit 1
