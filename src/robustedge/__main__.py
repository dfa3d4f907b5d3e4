"""``python -m robustedge`` (so also ``torchrun --nproc-per-node N -m robustedge train ...``)."""

from robustedge.cli import main

if __name__ == "__main__":
    main()
