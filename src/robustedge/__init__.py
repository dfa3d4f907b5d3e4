"""robustedge: robust, compressed CNNs from PyTorch to ARM boards."""

__version__ = "0.1.0"
