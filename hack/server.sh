#!/usr/bin/env bash
# Installs build dependencies, builds minik8s (release) and runs `minik8s server` with the
# given flags, e.g. `hack/server.sh --https-listen-port 7443`. The data dir defaults to
# /var/lib/minik8s as root, else ~/.minik8s.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/hack/install-deps.sh"
if [[ -d $HOME/.cargo/bin ]]; then export PATH=$HOME/.cargo/bin:$PATH; fi
cd "$root"
cargo build --release -p minik8s
exec "$root/target/release/minik8s" server "$@"
