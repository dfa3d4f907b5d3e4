# Host toolchain: train / compress / export / bundle / report (x86_64 or arm64 host).
# Build from the repository root:  docker build -f docker/host.Dockerfile -t robustedge-host .
# The pip steps are the Makefile's `venv` steps, unchanged (tests/test_docker.py checks it).
FROM python:3.11.7-slim-bookworm

# torch==2.13.0 resolves to the CPU wheel (2.13.0+cpu) from this index, not the CUDA build.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1

WORKDIR /src
COPY requirements/ requirements/
RUN pip install -q --disable-pip-version-check -r requirements/base.txt -r requirements/export.txt -r requirements/dev.txt -r requirements/scale.txt -r requirements/mcu.txt \
    && pip install -q --disable-pip-version-check --no-deps -r requirements/nodeps.txt

COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .

RUN useradd --create-home robustedge && mkdir -p /work && chown robustedge /work
USER robustedge
WORKDIR /work
ENTRYPOINT ["robustedge"]
CMD ["--help"]
