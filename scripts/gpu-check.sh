#!/usr/bin/env bash
# GPU check: a short train -> compress -> eval -> export on CUDA, then the CUDA tests, printing
# the figures (accuracies, sparsity, seconds per step). For a machine with an NVIDIA GPU and
# the venv built (`make venv`); exits 1 without CUDA, non-zero on any failure.
# Usage: scripts/gpu-check.sh [OUT_DIR]   (default: a fresh temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
RE=.venv/bin/robustedge
PY=.venv/bin/python
OUT=${1:-$(mktemp -d -t robustedge-gpu.XXXXXX)}
mkdir -p "$OUT"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu-check: no CUDA GPU visible to torch (torch.cuda.is_available() is False)" >&2
    exit 1
fi
"$PY" -c 'import torch; print("gpu:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda, "| GPUs:", torch.cuda.device_count())'

t() { local s=$SECONDS; "$@"; echo "  ($((SECONDS - s)) s)"; }

echo "== train: ResNet-8 on synthetic32, PGD-7 AT, 3 epochs (cuda)"
t "$RE" train --data synthetic32 --model resnet8 --adversary pgd --eps 0.031 --steps 7 \
    --epochs 3 --batch-size 128 --lr 0.01 --optimizer sgd --device cuda --no-progress \
    --out "$OUT/teacher"
for method in prox admm hydra; do
    echo "== compress: $method to 90 % sparsity, PGD-3 AT, 2+1 epochs (cuda)"
    t "$RE" compress --teacher "$OUT/teacher" --method "$method" --sparsity 0.9 --epochs 2 \
        --finetune-epochs 1 --steps 3 --eps 0.031 --device cuda --attack fgsm \
        --out "$OUT/student-$method"
done
echo "== eval: PGD-20x5 of the prox student"
t "$RE" eval "$OUT/student-prox" --attack pgd --eps 0.031
if "$PY" -c 'import onnx2tf' 2>/dev/null; then
    echo "== export: ONNX + int8 TFLite of the prox student (parity gates)"
    t "$RE" export "$OUT/student-prox" --formats onnx,tflite-int8 --clean-margin 5 --robust-margin 5
else
    echo "== export: skipped (the [export] extra is not installed)"
fi
if [ "$("$PY" -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
    echo "== DDP: 2 NCCL ranks, 1 epoch"
    t "$RE" train --data synthetic32 --model resnet8 --adversary pgd --eps 0.031 --steps 7 \
        --epochs 1 --batch-size 128 --device cuda --nproc 2 --no-progress --out "$OUT/ddp"
fi
if [ -n "${CIFAR10_DIR:-}" ]; then  # the Adversarial Pruning Benchmark's protocol (issue 24)
    if [ "${APB_FULL:-0}" = 1 ]; then
        echo "== APB: ResNet-18 + VGG-16, 90/95/99 %, AutoAttack 8/255, full test set (resumable)"
        t "$PY" benchmarks/apb.py --data-dir "$CIFAR10_DIR" --device cuda --out "$OUT/apb"
    else
        echo "== APB, one cell: ResNet-18 at 99 %, prox and harp, 2+2+2 epochs, AutoAttack on 1000 images"
        t "$PY" benchmarks/apb.py --data-dir "$CIFAR10_DIR" --device cuda --models resnet18 \
            --methods prox harp --sparsities 0.99 --teacher-epochs 2 --epochs 2 \
            --finetune-epochs 2 --subset 1000 --out "$OUT/apb"
    fi
else
    echo "== APB: skipped (CIFAR10_DIR=<cifar-10-batches-py folder>; APB_FULL=1 for the protocol)"
fi
echo "== CUDA tests"
OMP_NUM_THREADS=1 "$PY" -m pytest -q tests/test_cuda.py tests/test_ddp.py -k "cuda or nccl" -rs
echo "gpu-check: all passed; outputs in $OUT"
