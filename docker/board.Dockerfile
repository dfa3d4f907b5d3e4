# Board image (arm64): the bundle runner only, numpy + ai-edge-litert, nothing else.
# Build and run on an x86 host under QEMU (binfmt), see docker/README.md:
#   docker build --platform linux/arm64 -f docker/board.Dockerfile -t robustedge-board .
#   docker run --rm --platform linux/arm64 -v "$PWD/bundle:/bundle:ro" -v "$PWD/out:/out" robustedge-board
FROM python:3.11.7-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY requirements/board.txt /opt/robustedge/requirements/board.txt
RUN pip install -q --disable-pip-version-check -r /opt/robustedge/requirements/board.txt

RUN useradd --create-home pi && mkdir -p /out && chown pi /out
USER pi
WORKDIR /home/pi
# A bundle from `robustedge bundle RUN --out bundle` is mounted at /bundle (read-only).
ENTRYPOINT ["python3", "/bundle/run_bundle.py", "--bundle", "/bundle"]
CMD ["--out", "/out/results.json", "--emulated"]
