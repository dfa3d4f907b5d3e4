"""The host side: build bundles, put them on targets (local, SSH, qemu-user, full-system VM),
check boards. Never shipped in a bundle."""
