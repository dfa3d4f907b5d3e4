"""The host side: build bundles, put them on targets (local, SSH, qemu-user, full-system VM),
check boards. Never shipped in a bundle."""

# Targets in modules of their own register in TARGETS on import (they subclass targets.py's).
from robustedge.device.host import mcu  # noqa: E402,F401  (tflm: microcontrollers)
