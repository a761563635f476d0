#!/usr/bin/env bash
# Installs what building and testing minik8s need, on Debian, from the configured Debian
# archives only. Idempotent: when everything is present it changes nothing (and does not
# even run `apt-get update`).
set -euo pipefail

say() { printf 'install-deps: %s\n' "$*"; }

have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

if ! have_cmd dpkg-query || ! have_cmd apt-get; then
    say "this script knows Debian (apt) only; install by hand: etcd, protoc + protobuf headers, pkg-config, curl, a C toolchain"
    exit 1
fi

missing=()
# need PACKAGE TEST...: PACKAGE is missing unless it is installed or one TEST (a command
# name, or a path when it contains a /) already holds.
need() {
    local pkg=$1
    shift
    local t
    for t in "$@"; do
        if [[ $t == */* ]]; then [[ -e $t ]] && return 0; else have_cmd "$t" && return 0; fi
    done
    have_pkg "$pkg" && return 0
    missing+=("$pkg")
}

need build-essential          # cc, make: ring and SQLite (bundled) compile C
need pkg-config pkg-config
need curl curl
need jq jq                    # e2e/kubectl.sh reads kubectl JSON output
need etcd-server etcd         # the etcd backend tests start /usr/bin/etcd
need protobuf-compiler protoc # etcd-client's build script
need libprotobuf-dev /usr/include/google/protobuf/descriptor.proto
need docker.io dockerd         # the kubelet runs pods on Docker Engine (hack/docker.sh starts it)
need busybox-static            # test images are built from it (no registry is reachable)
need iptables iptables
need iproute2 ip
need openssl openssl          # e2e/kubectl.sh makes a CSR for kubectl certificate approve

# Stock kubectl drives the e2e scenarios. Debian's kubernetes-client (1.20) is far too old and
# kubectl comes from outside Debian, so this script only reports it.
if ! have_cmd kubectl; then
    say "kubectl not found: the e2e kubectl scenarios need kubectl 1.27 or newer on PATH"
fi

if ((${#missing[@]} == 0)); then
    say "system packages: all present"
else
    sudo=()
    if [[ $(id -u) != 0 ]]; then
        if have_cmd sudo; then
            sudo=(sudo)
        else
            say "missing: ${missing[*]}; run as root: apt-get update && apt-get install -y ${missing[*]}"
            exit 1
        fi
    fi
    say "installing: ${missing[*]}"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Rust comes from rustup, preinstalled on our machines; this script does not download it.
if [[ -d $HOME/.cargo/bin ]]; then export PATH=$HOME/.cargo/bin:$PATH; fi
if ! have_cmd cargo; then
    say "cargo not found: install Rust with rustup (Debian: apt-get install rustup, then rustup default stable)"
    exit 1
fi
for component in fmt clippy; do
    if ! cargo "$component" --version >/dev/null 2>&1; then
        say "cargo $component not found: rustup component add ${component/fmt/rustfmt}"
        exit 1
    fi
done
say "rust: $(cargo --version)"
