"""Bundle entry point, copied into every bundle as ``run_bundle.py``.

Usage on the board: ``python3 run_bundle.py [--format F] [--threads N] [--runs 200]
[--square-queries Q] [--reference-kernels] --out results.json``. Needs Python >= 3.9, numpy and
one interpreter (ai-edge-litert, tflite-runtime or onnxruntime); nothing else.
"""

import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ beside the checked files of the bundle
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))

from robustedge.device.board.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(default_bundle=HERE))
