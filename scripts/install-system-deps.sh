#!/usr/bin/env bash
# System packages for the device harness tests (ARM emulation, the full-system aarch64 VM
# board, and a loopback SSH "board").
# Idempotent, quiet, root only. Usage: sudo scripts/install-system-deps.sh
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps.sh: run as root (it apt-get installs qemu-user-static etc.)" >&2
    exit 1
fi

PKGS="qemu-user-static binfmt-support mmdebstrap openssh-server openssh-client debian-archive-keyring ca-certificates chromium qemu-system-arm qemu-utils e2fsprogs"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    # shellcheck disable=SC2086
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "install-system-deps.sh: apt-get failed (packages:$missing)" >&2
        exit 1
    fi
    rm -f "$log"
fi

if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
for fmt in qemu-aarch64 qemu-arm; do
    update-binfmts --enable "$fmt" >/dev/null 2>&1 || update-binfmts --import "$fmt" >/dev/null 2>&1 || true
    if [ ! -e "/proc/sys/fs/binfmt_misc/$fmt" ]; then
        echo "install-system-deps.sh: could not enable binfmt for $fmt" >&2
        exit 1
    fi
done
mkdir -p /run/sshd
echo "system deps ready: qemu-user-static (aarch64, arm), qemu-system-arm, mmdebstrap, openssh"
