"""The Adversarial Pruning Benchmark's protocol (Piras et al. 2024), ready for a GPU.

CIFAR-10 from local files (``--data-dir``: the ``cifar-10-batches-py`` folder or its
tarball), ResNet-18 (CIFAR variant: 3x3 stem, basic blocks 2-2-2-2 at 64-128-256-512
channels) and VGG-16 (with BatchNorm), PGD-AT teachers (Linf 8/255, PGD-10 with step 2/255),
unstructured pruning at 90 / 95 / 99 % with every method asked for, then standard AutoAttack
(``autoattack`` suite: APGD-CE, APGD-T, FAB-T, Square-5000; torchattacks) at 8/255 on the whole
test set. Resumable: each teacher, student and evaluation is a folder or file that is reused
when complete, and an interrupted compression resumes from its checkpoint. Writes
``benchmarks/results/apb/apb.json`` and the benchmark's table layout (one row per method,
architecture and sparsity: clean and AutoAttack accuracy) to ``apb.md``.

    .venv/bin/python benchmarks/apb.py --data-dir ~/data/cifar10 --device cuda
    .venv/bin/python benchmarks/apb.py --data-dir D --methods harp prox --sparsities 0.99

The published rows it is compared against (APB leaderboard, ResNet-18, 99 %): HARP 83.1 clean
/ 45.5 AA, HYDRA 72.2 / 38.8, ADMM 71.2 / 37.2. ``--subset``, ``--width`` and the epoch options
make the CPU smoke run (tests/test_apb.py); a reduced run is labelled as such in its output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, hardware, jsonable, loadavg, table  # noqa: E402

EPS = 8 / 255
ALPHA = 2 / 255  # PGD-AT step size of the protocol
MODELS = {  # name -> (model factory, kwargs)
    "resnet18": (
        "robustedge.models.resnet:CifarResNet",
        {"blocks": [2, 2, 2, 2], "channels": [64, 128, 256, 512]},
    ),
    "vgg16": ("vgg", {"depth": "vgg16"}),
}
PUBLISHED = {("harp", "resnet18", 0.99): (83.1, 45.5), ("hydra", "resnet18", 0.99): (72.2, 38.8),
             ("admm", "resnet18", 0.99): (71.2, 37.2)}  # fmt: skip


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True, help="Folder with CIFAR-10's python batches.")
    ap.add_argument("--out", type=Path, default=RESULTS / "apb")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--methods", nargs="+", default=["prox", "harp", "hydra", "admm"])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.99])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--teacher-epochs", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=20, help="Pruning-phase epochs.")
    ap.add_argument("--finetune-epochs", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--suite", default="autoattack")
    ap.add_argument("--subset", type=int, default=0, help="Evaluate on the first N test images.")
    ap.add_argument("--width", type=float, default=1.0, help="Channel multiplier (smoke runs).")
    return ap.parse_args()


def spec_of(name: str, width: float) -> tuple:
    """(model name, kwargs) of an architecture at channel multiplier ``width``."""
    model, kwargs = MODELS[name]
    return model, dict(kwargs) if width == 1.0 else {**kwargs, "width": width}


def teacher(a, name: str) -> Path:
    """The PGD-AT teacher of ``name`` (trained once, resumed when interrupted)."""
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    model, kwargs = spec_of(name, a.width)
    out = a.out / f"teacher_{name}_w{a.width:g}_e{a.teacher_epochs}_s{a.seed}"
    if (out / "metrics.json").is_file():
        return out
    cfg = TrainConfig(
        data="cifar10", data_dir=a.data_dir, model=model, model_kwargs=kwargs,
        adversary="pgd", eps=EPS, steps=10, epochs=a.teacher_epochs,
        batch_size=a.batch_size, lr=0.1, optimizer="sgd", weight_decay=5e-4,
        device=a.device, seed=a.seed,
    )  # fmt: skip
    train_run(cfg, out, resume=(out / "checkpoint").is_dir())
    return out


def student(a, t: Path, method: str, sparsity: float) -> Path:
    """The pruned and fine-tuned student (resumed from its checkpoint when interrupted)."""
    from robustedge.compress import CompressConfig, compress_run

    out = t.parent / f"{t.name}__{method}_{sparsity:g}_e{a.epochs}+{a.finetune_epochs}"
    if (out / "metrics.json").is_file():
        return out
    cfg = CompressConfig(
        teacher=str(t), method=method, sparsity=sparsity, eps=EPS, steps=10,
        epochs=a.epochs, finetune_epochs=a.finetune_epochs, batch_size=a.batch_size,
        lr=0.01, optimizer="sgd", device=a.device, seed=a.seed,
    )  # fmt: skip
    compress_run(cfg, out, eval_attacks=(), resume=(out / "checkpoint").is_dir())
    return out


def evaluate(a, run: Path) -> Dict[str, Any]:
    """Clean and suite accuracy of ``run`` at 8/255 (cached in ``run/apb_eval.json``)."""
    from robustedge.attacks.suite import worst_case_accuracy
    from robustedge.devices import resolve_device
    from robustedge.io import write_json
    from robustedge.runs import load_run

    path = run / f"apb_eval_{a.suite}_n{a.subset or 'all'}.json"
    if path.is_file():
        return json.loads(path.read_text())
    loaded = load_run(run)
    model = loaded.model.to(resolve_device(a.device)).eval()
    x, y = loaded.data.x_test, loaded.data.y_test
    if a.subset:
        x, y = x[: a.subset], y[: a.subset]
    t0 = time.perf_counter()
    res = worst_case_accuracy(model, x, y, a.suite, eps=EPS, seed=a.seed).to_dict()
    res["seconds"] = time.perf_counter() - t0
    write_json(path, res)
    return res


def row(a, name: str, method: str, sparsity: float, res: Dict[str, Any]) -> Dict[str, Any]:
    pub = PUBLISHED.get((method, name, sparsity))
    return {
        "method": method,
        "architecture": name,
        "sparsity": sparsity,
        "clean": 100 * res["clean_acc"],
        "autoattack": 100 * res["worst_case_acc"],
        "n": res["n"],
        "suite": res["label"],
        "implementation": res.get("implementation"),
        "published": {"clean": pub[0], "autoattack": pub[1]} if pub else None,
    }


def main() -> None:
    a = parse()
    a.out.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []
    for name in a.models:
        t = teacher(a, name)
        rows.append(row(a, name, "teacher (PGD-AT)", 0.0, evaluate(a, t)))
        for sparsity in a.sparsities:
            for method in a.methods:
                s = student(a, t, method, sparsity)
                rows.append(row(a, name, method, sparsity, evaluate(a, s)))
                print(json.dumps(rows[-1]), flush=True)
    reduced = a.subset or a.width != 1.0 or a.teacher_epochs < 100
    payload = {
        "protocol": "Adversarial Pruning Benchmark (Piras et al. 2024): CIFAR-10, Linf 8/255",
        "reduced": bool(reduced),
        "hardware": hardware(),
        "load": loadavg(),
        "setting": {k: str(v) if isinstance(v, Path) else v for k, v in vars(a).items()},
        "rows": rows,
    }
    (a.out / "apb.json").write_text(json.dumps(payload, indent=2, default=jsonable) + "\n")
    heads = ["method", "arch", "sparsity %", "clean %", "AA %", "n", "published clean / AA"]
    cells = [
        [r["method"], r["architecture"], 100 * r["sparsity"], r["clean"], r["autoattack"], r["n"],
         f"{r['published']['clean']} / {r['published']['autoattack']}" if r["published"] else ""]
        for r in rows
    ]  # fmt: skip
    text = table(heads, cells)
    title = "APB protocol" + (" (REDUCED smoke setting, not the benchmark)" if reduced else "")
    (a.out / "apb.md").write_text(f"# {title}\n\n```\n{text}\n```\n")
    print(title)
    print(text)


if __name__ == "__main__":
    main()
