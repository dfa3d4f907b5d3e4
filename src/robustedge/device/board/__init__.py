"""The board side: the bundle runner and what it imports (stdlib, numpy, an interpreter,
``robustedge.errors / registry / hashing / jsonsafe / config`` and nothing from the host).
A bundle ships exactly this package (``device.host.bundle``)."""
