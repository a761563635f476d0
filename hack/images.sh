#!/usr/bin/env bash
# Builds the images the e2e tests and examples use, locally (no registry is needed):
#   minik8s-test/busybox:latest  a root file system of Debian's static busybox, `docker import`ed.
# The pod infra image (minik8s/pause) needs nothing here: the kubelet builds it itself.
# Usage: hack/images.sh [--force]
set -euo pipefail

say() { printf 'images: %s\n' "$*"; }
image=minik8s-test/busybox:latest

if [[ ${1:-} != --force ]] && docker image inspect "$image" >/dev/null 2>&1; then
    say "$image is present"
    exit 0
fi
busybox=/bin/busybox
if ! [[ -x $busybox ]] || ! "$busybox" --list >/dev/null 2>&1; then
    say "$busybox not found: install Debian's busybox-static (hack/install-deps.sh does)"
    exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
    say "$busybox is dynamically linked: install busybox-static, not busybox"
    exit 1
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc,tmp,root,var/www,proc,sys,dev}
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ $applet == busybox ]] || ln -sf busybox "$root/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - "$image" >/dev/null
say "built $image"
