"""Exact resume: a run killed (SIGKILL) after an epoch and resumed equals the uninterrupted run
bit for bit (one thread): PGD-AT training, and compression with prox, ADMM and HYDRA (in the
pruning phase and in the fine-tune)."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Callable, List

import pytest
import torch
from safetensors.torch import load_file

from _forked_cli import ForkedCli, kill_at
from robustedge.compress import CompressConfig, compress_run
from robustedge.training.config import TrainConfig
from robustedge.training.run import train_run

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cli():
    """The killed runs: `robustedge` commands forked from one preloaded process (no 2-3 s of
    interpreter start each, so the runs can be small: digits cut to 192 training images)."""
    forked = ForkedCli(ENV)
    yield forked
    forked.close()


def load_ckpt(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def kill_when(cli: ForkedCli, args: List[str], ckpt: Path, ready: Callable[[dict], bool]) -> dict:
    """Run `robustedge ARGS`, SIGKILL it at the first checkpoint that satisfies ``ready``;
    returns that checkpoint. A run whose epochs outpaced the watcher (it skipped the kill
    point) is redone from an empty folder, up to 3 times."""
    err = ""
    for _ in range(3):
        shutil.rmtree(ckpt.parent.parent, ignore_errors=True)
        call = cli.start(args)
        state = kill_at(call, ckpt, ready, load_ckpt)
        if state is not None:
            return state
        call.wait()
        err = call.stderr()
    raise AssertionError(f"never reached the kill point: {err[-2000:]}")


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def without_time(history):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.slow
def test_pgd_training_resumed_after_kill_equals_uninterrupted(tmp_path, small_digits, cli):
    # 12 steps an epoch (192 images, batches of 16): killed after epoch 1 of 3, the rest
    # needs the restored cosine schedule, Adam moments, shuffle and PGD generator
    data = dict(data="npz", data_dir=small_digits, batch_size=16)
    cfg = TrainConfig(
        model="tiny", adversary="pgd", eps=0.1, steps=3, epochs=3, lr=1e-2, seed=5, **data
    )
    full = train_run(cfg, tmp_path / "full")
    part = tmp_path / "part"
    args = ["train", "--model", "tiny", "--adversary", "pgd", "--eps", "0.1", "--steps", "3"]
    args += ["--epochs", "3", "--lr", "0.01", "--seed", "5", "--device", "auto", "--no-progress"]
    args += ["--data", "npz", "--data-dir", small_digits, "--batch-size", "16"]
    ckpt = part / "checkpoint" / "last.pt"
    state = kill_when(cli, [*args, "--out", str(part)], ckpt, lambda s: s["epoch"] == 1)
    assert state["epoch"] < 3 and not (part / "metrics.json").exists()
    rng = state["rng"][0]
    assert {"torch", "numpy", "python", "generator"} <= set(rng)
    resumed = train_run(cfg, part, resume=True)
    same_weights(tmp_path / "full", part)
    assert without_time(resumed["history"]) == without_time(full["history"])
    assert resumed["clean_acc"] == full["clean_acc"] and resumed["robust"] == full["robust"]


def test_the_adversary_draws_from_its_own_generator(tiny_run):
    """Random starts come from the adversary's generator, not the global RNG: restoring the
    generator's state (what a checkpoint holds) repeats them, whatever the global RNG did."""
    from robustedge.models import load_model
    from robustedge.training.adversaries import build_adversary

    model, _ = load_model(tiny_run)
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 10

    def crafted(adv) -> torch.Tensor:  # the examples the model is trained on
        return adv.loss(copy.deepcopy(model), x, y, lambda logits, y, x_used: x_used.sum())

    for name in ("fgsm", "pgd", "trades"):
        adv = build_adversary(name, 0.1, 2)
        adv.seed(0)
        saved = adv.generator.get_state()
        a = crafted(adv)
        torch.manual_seed(1234)  # the global RNG moves; the adversary's stream does not care
        adv.generator.set_state(saved)
        assert torch.equal(crafted(adv), a), name
        assert not torch.equal(crafted(adv), a), name  # the stream advanced: a new start


# prox whose dense first 60 % carries ADMM's pull: killed after epoch 1 of 2, the resumed run
# needs Z, U and rho for the rest of the warm start
ADMM_WARM = {"admm_warm": True, "ramp_start": 0.6}


def compress_cfg(teacher: Path, data: str, method: str, finetune: int, extra=None):
    """The run killed and resumed: 2 pruning epochs on ``data`` (an npz file: digits cut to
    192 images, 12 steps of 16 an epoch), then ``finetune`` masked fine-tune epochs."""
    return CompressConfig.from_keys(
        **(extra or {}),
        teacher=str(teacher),
        data="npz",
        data_dir=data,
        method=method,
        sparsity=0.8,
        epochs=2,
        finetune_epochs=finetune,
        adversary="pgd",
        eps=0.1,
        steps=2,
        seed=2,
    )


# gmp masks every 5 steps over both epochs (12 steps each): after the kill, the pruning turns
# and their sparsity targets depend on the restored step counter
GMP_TURNS = {"gmp_frequency": 5}

# prox with searched per-layer budgets: the search runs at the ramp's first step (epoch 0); the
# resumed run must take the budgets from the checkpoint, not search again on other weights
FISHER = {"layer_budget": "fisher"}
# prox with HARP's learned budgets: killed inside the rate phase, or in prox after it (then the
# rate phase is not run again: prox's checkpoint holds the budgets)
HARP = {"layer_budget": "harp"}


def compress_args(
    teacher: Path, data: str, method: str, finetune: int, out: Path, extra=None
) -> List[str]:
    flags: List[str] = ["--data", "npz", "--data-dir", data]
    for key, value in (extra or {}).items():  # the same settings as command-line flags
        flags += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return [
        "compress",
        *flags,
        "--teacher",
        str(teacher),
        "--method",
        method,
        "--sparsity",
        "0.8",
        "--epochs",
        "2",
        "--finetune-epochs",
        str(finetune),
        "--adversary",
        "pgd",
        "--eps",
        "0.1",
        "--steps",
        "2",
        "--seed",
        "2",
        "--attack",
        "fgsm",
        "--out",
        str(out),
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "method,finetune,phase,extra",
    [
        ("prox", 1, "prox", None),
        ("admm", 1, "admm", None),
        ("hydra", 1, "hydra-scores", None),
        ("prox", 2, "finetune", None),  # killed in the fine-tune: the pruning phase not redone
        ("prox", 1, "prox", ADMM_WARM),  # killed inside the ADMM-pulled warm start
        ("gmp", 1, "gmp", GMP_TURNS),
        ("prox", 1, "prox", FISHER),
        ("prox", 1, "harp-budget", HARP),
        ("prox", 1, "prox", HARP),
        ("harp", 1, "harp", None),  # its record of every epoch's rates survives the resume
    ],
    ids=[
        "prox",
        "admm",
        "hydra",
        "prox-finetune",
        "prox-admm-warm",
        "gmp",
        "prox-fisher",
        "harp-budget-phase",
        "prox-after-harp-budget",
        "harp",
    ],
)
def test_compress_resumed_after_kill_equals_uninterrupted(
    tiny_run, small_digits, cli, tmp_path, caplog, method, finetune, phase, extra
):
    cfg = compress_cfg(tiny_run, small_digits, method, finetune, extra)
    full = compress_run(cfg, tmp_path / "full", eval_attacks=("fgsm",))
    part = tmp_path / "part"

    def ready(s: dict) -> bool:
        return s.get("phase") == phase and s.get("epoch") == 1

    args = compress_args(tiny_run, small_digits, method, finetune, part, extra)
    state = kill_when(cli, args, part / "checkpoint" / "last.pt", ready)
    assert state["method_state"]  # ADMM Z/U, HYDRA scores, masks, lazy prox's residual
    if extra == ADMM_WARM:  # the residual, Z and U of every prunable layer
        from robustedge.compress.targets import prunable_params
        from robustedge.models import load_model

        layers = len(prunable_params(load_model(tiny_run)[0]))
        assert len(state["method_state"]) == 3 * layers
    if extra in (FISHER, HARP) and phase == "prox":  # chosen before the kill, checkpointed
        assert state["extra_state"]["prox_budgets"]["budgets"] == full["notes"]["layer_budgets"]
    assert not (part / "model.safetensors").exists()
    if phase == "finetune":  # through the command line: `compress ... --resume`
        call = cli.start([*args, "--resume"])
        assert call.wait() == 0, call.stderr()
        resumed = json.loads((part / "metrics.json").read_text())
    else:
        with caplog.at_level("INFO", logger="robustedge"):
            resumed = compress_run(cfg, part, eval_attacks=("fgsm",), resume=True)
    if extra == FISHER:  # a search on the resumed weights could pick the same budgets by chance
        assert "layer budgets (fisher search)" not in caplog.text
    if extra == HARP and phase == "prox":  # the rate phase is not run again
        assert "harp rate phase" not in caplog.text
    same_weights(tmp_path / "full", part)
    fm = load_file(str(tmp_path / "full" / "masks.safetensors"))
    pm = load_file(str(part / "masks.safetensors"))
    assert fm.keys() == pm.keys() and all(torch.equal(fm[k], pm[k]) for k in fm)
    assert without_time(resumed["history"]) == without_time(full["history"])
    assert resumed["notes"] == full["notes"]
    assert resumed["clean_acc"] == full["clean_acc"] and resumed["robust"] == full["robust"]
    assert not (part / "checkpoint").exists()  # the finished run folder replaced it


def test_compress_resume_refuses_another_config(tiny_run, small_digits, tmp_path):
    from robustedge.errors import CheckpointError

    out = tmp_path / "s"
    cfg = compress_cfg(tiny_run, small_digits, "magnitude", 1)
    compress_run(cfg, out, eval_attacks=())
    (out / "checkpoint").mkdir()
    torch.save(
        {"config": {"other": 1}, "phase": "finetune", "epoch": 1}, out / "checkpoint" / "last.pt"
    )
    with pytest.raises(CheckpointError, match="different config"):
        compress_run(cfg, out, eval_attacks=(), resume=True)
