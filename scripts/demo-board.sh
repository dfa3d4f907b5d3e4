#!/usr/bin/env bash
# Board set-up for `make demo`: as root, install the system packages and build (once, cached
# under ~/.cache/robustedge/qemu) the emulated aarch64 userland, so the demo's report has board
# rows. Not root: one line saying what to run. Never fails the demo.
# Usage: scripts/demo-board.sh [PATH/TO/robustedge]
set -uo pipefail
RE=${1:-.venv/bin/robustedge}
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: no emulated board (not root): run 'sudo make system-deps && sudo $RE device setup-qemu --arch aarch64' for board rows"
    exit 0
fi
start=$(date +%s)
if ! bash scripts/install-system-deps.sh >/dev/null; then
    echo "demo: system packages failed (see above): the board rows will be skipped"
    exit 0
fi
if ! "$RE" device setup-qemu --arch aarch64 >/dev/null; then
    echo "demo: could not build the aarch64 userland (see above): the board rows will be skipped"
    exit 0
fi
echo "demo: emulated aarch64 board ready ($(( $(date +%s) - start )) s of set-up, cached for next time)"
