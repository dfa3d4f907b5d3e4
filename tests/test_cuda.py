"""Every ``--device cuda`` path: training, compression (prox, ADMM, HYDRA), evaluation, exact
resume, manifold training and the CLI. They run where a CUDA GPU is present and skip with the
reason elsewhere (``scripts/gpu-check.sh`` runs the end-to-end figures on a GPU machine)."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from robustedge.errors import RobustEdgeError

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (torch.cuda.is_available())")


@pytest.mark.skipif(CUDA, reason="checks the error shown when no CUDA GPU is present")
def test_cuda_asked_without_a_gpu_is_one_clear_error():
    from robustedge.devices import resolve_device

    with pytest.raises(RobustEdgeError, match="no CUDA GPU is available"):
        resolve_device("cuda")


@needs_cuda
def test_train_on_cuda_and_resume_exactly(tmp_path):
    from robustedge.training.config import TrainConfig
    from robustedge.training.run import train_run

    cfg = TrainConfig(model="tiny", adversary="pgd", steps=2, epochs=2, lr=1e-2, device="cuda")
    m = train_run(cfg, tmp_path / "full")
    assert m["clean_acc"] > 0.3 and m["world_size"] == 1
    one = cfg
    part = tmp_path / "part"
    import robustedge.training.run as run_mod

    real = run_mod.fit

    def stop_after_first(*a, on_epoch_end=None, **kw):
        def hook(epoch, rec):
            on_epoch_end(epoch, rec)
            raise KeyboardInterrupt

        return real(*a, on_epoch_end=hook, **kw)

    run_mod.fit = stop_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            train_run(one, part)
    finally:
        run_mod.fit = real
    state = torch.load(part / "checkpoint" / "last.pt", weights_only=True)
    assert state["rng"][0].get("cuda") is not None  # the CUDA generators are checkpointed too
    train_run(one, part, resume=True)
    a, b = (
        load_file(str(tmp_path / "full" / "model.safetensors")),
        load_file(str(part / "model.safetensors")),
    )
    for k in a:  # cuDNN kernels may differ in the last bits between runs
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("method", ["prox", "admm", "hydra"])
def test_compress_on_cuda(tiny_run, tmp_path, method):
    from robustedge.compress import CompressConfig, compress_run

    cfg = CompressConfig(
        teacher=str(tiny_run),
        method=method,
        sparsity=0.8,
        epochs=1,
        finetune_epochs=1,
        adversary="pgd",
        steps=2,
        device="cuda",
    )
    m = compress_run(cfg, tmp_path / method, eval_attacks=("fgsm",))
    assert m["sparsity"]["global"] == pytest.approx(0.8, abs=0.01)


@needs_cuda
def test_eval_and_manifold_on_cuda(tiny_run, tmp_path):
    from robustedge.manifold.train import VAEConfig, train_vae
    from robustedge.training.run import eval_run

    r = eval_run(tiny_run, ["fgsm", "pgd"])
    assert 0 <= r["robust"][0]["acc"] <= r["clean_acc"]
    m = train_vae(VAEConfig(epochs=1, device="cuda"), tmp_path / "vae")
    assert m["test"]["mse_per_pixel"] < 0.2


@needs_cuda
def test_cli_train_on_cuda(cli, tmp_path):
    out = tmp_path / "o"
    r = cli(
        "train", "--model", "tiny", "--epochs", "1", "--steps", "2", "--device", "cuda",
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (out / "model.safetensors").is_file()
    shutil.rmtree(out)
