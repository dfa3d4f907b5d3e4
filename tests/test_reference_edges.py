"""Hand-computed references for numbers, units, integrity and paths: latency percentiles
against numpy, the bundle's full sha256 comparison, the epoch-seeded shuffle, a recipe target's
own Square settings, ONNX int8's calibration on every input, MACs with groups and strides, and
labels (weaker than default, headline, budget probes) at their edges. The algorithms' one-step
references are in test_reference.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

# ---------------------------------------------------------------- latency summary


def test_latency_percentiles_are_the_numpy_ones_on_known_data():
    """1..100 ms: p50 = 50.5, p90 = 90.1, p99 = 99.01 (linear interpolation), mean 50.5,
    min 1; shuffled input gives the same numbers."""
    from robustedge.device.board.measure import summarize

    times = np.random.default_rng(0).permutation(np.arange(1, 101)) / 1e3
    lat = summarize(times, warmup=3, threads=1, emulated=False)
    assert (lat.p50_ms, lat.p90_ms, lat.p99_ms) == pytest.approx((50.5, 90.1, 99.01))
    assert lat.mean_ms == pytest.approx(50.5) and lat.min_ms == pytest.approx(1.0)
    assert (lat.warmup, lat.runs, lat.threads) == (3, 100, 1)
    # two slow outliers in 200 runs moves p99 (the 99th percentile), not p50
    times = np.full(200, 0.002)
    times[-2:] = 1.0  # np.percentile index 0.99 * 199 = 197.01: 1 % of the way to 1000 ms
    lat = summarize(times, 0, 1, False)
    assert lat.p50_ms == pytest.approx(2.0) and lat.p90_ms == pytest.approx(2.0)
    assert lat.p99_ms == pytest.approx(float(np.percentile(times * 1e3, 99)))
    assert lat.p99_ms == pytest.approx(2.0 + 0.01 * 998.0)


# ---------------------------------------------------------------- bundle integrity


@pytest.mark.parametrize("how", ["truncated", "empty", "upper", "missing"])
def test_bundle_sha256_compared_in_full(bundle, how):
    import json

    from robustedge.device.board.bundle_format import BundleError, verify_bundle

    verify_bundle(bundle)
    man_path = bundle / "manifest.json"
    man = json.loads(man_path.read_text())
    rel = sorted(man["files"])[0]
    sha = man["files"][rel]["sha256"]
    man["files"][rel]["sha256"] = {
        "truncated": sha[:16],
        "empty": "",
        "upper": sha[:-1] + ("0" if sha[-1] != "0" else "1"),
        "missing": None,
    }[how]
    man_path.write_text(json.dumps(man))
    with pytest.raises(BundleError, match="sha256|manifest"):
        verify_bundle(bundle)


# ---------------------------------------------------------------- data order


def test_epoch_batches_reshuffle_every_epoch_and_follow_the_seed():
    from robustedge.training import epoch_batches

    x = torch.arange(40).float().view(40, 1)
    y = torch.arange(40)
    order = lambda b, e: torch.cat([yy for _, yy in b(e)]).tolist()  # noqa: E731
    b0 = epoch_batches(x, y, 8, seed=0)
    e0, e1, e0b = order(b0, 0), order(b0, 1), order(b0, 0)
    assert sorted(e0) == list(range(40)) and sorted(e1) == list(range(40))
    assert e0 == e0b  # resumable: the order is a function of (seed, epoch)
    assert e0 != e1  # a fresh shuffle every epoch
    assert order(epoch_batches(x, y, 8, seed=1), 0) != e0
    # torch's DistributedSampler with seed * 100003, one replica
    g = torch.Generator().manual_seed(0 * 100003 + 1)
    assert e1 == torch.randperm(40, generator=g).tolist()
    assert [len(yy) for _, yy in b0(0)] == [8] * 5


# ---------------------------------------------------------------- recipe per-target overrides


def test_recipe_target_overrides_apply_to_that_target_only():
    from robustedge.recipe import parse_recipe
    from robustedge.recipe.stages import bench_config

    text = """\
name: t
data: {name: digits}
teacher:
  train: {model: tiny, epochs: 1, adversary: none, eps: 0.0}
export: {formats: [onnx]}
devices:
  square_queries: 300
  square_n: 40
  runs: 250
  targets:
    - {target: local, square_queries: 50}
    - {target: qemu-aarch64, square_n: 7}
"""
    r = parse_recipe(text)
    local, qemu = r.devices.targets
    a, b = bench_config(r, local), bench_config(r, qemu)
    assert (a.square_queries, a.square_n, a.runs) == (50, 40, 250)
    assert (b.square_queries, b.square_n, b.runs) == (300, 7, 250)
    assert a.format == b.format == r.bench_format()


# ---------------------------------------------------------------- ONNX int8 calibration


def test_onnx_int8_calibrates_on_every_input(tmp_path):
    """The input's activation range comes from all calibration inputs: only the last one of
    30 reaches 1.0 (the rest stay below 0.1), so the input's QDQ scale must cover 1.0."""
    pytest.importorskip("onnxruntime")
    from robustedge.export.onnx_quant import quantize_onnx

    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(), nn.Linear(8, 3)).eval()
    src = tmp_path / "m.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 2, 2), str(src), input_names=["input"], dynamo=False)
    calib = np.random.default_rng(0).uniform(0, 0.1, size=(30, 1, 2, 2)).astype(np.float32)
    calib[-1] = 1.0
    out = quantize_onnx(src, tmp_path / "q.onnx", "input", calib)
    top = onnx_input_top(out, "input")
    assert 0.99 <= top < 1.1, f"calibration missed the inputs that reach 1.0 (range up to {top})"


def onnx_input_top(path, input_name):
    """The largest value the int8 model's input QuantizeLinear represents."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    q_in = next(n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == input_name)
    scale = float(inits[q_in.input[1]])
    zero = int(inits[q_in.input[2]]) if len(q_in.input) > 2 else 0
    return (127 - zero) * scale


# ---------------------------------------------------------------- MACs


def test_macs_by_hand_with_groups_stride_and_zeros():
    """conv 2->4 3x3 pad 1 on 5x5: 4*25*(2*9) = 1800; depthwise 4 groups 3x3 stride 2 pad 1 on
    5x5 -> 3x3: 4*9*9 = 324; linear 36 -> 3: 108. ``nonzero`` scales each layer by its density
    (half the linear weights zeroed: 54)."""
    from robustedge.models.macs import count_macs

    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4),
        nn.Flatten(),
        nn.Linear(36, 3),
    )
    with torch.no_grad():
        for m in net:
            if hasattr(m, "weight"):
                m.weight.fill_(0.5)
        net[3].weight[:, :18] = 0.0
    got = count_macs(net, (2, 5, 5))
    assert got == {"dense": 1800 + 324 + 108, "nonzero": 1800 + 324 + 54}
    assert net.training  # the mode is restored


# ---------------------------------------------------------------- labels at their edges


def test_weaker_than_default_label_at_its_edges():
    """None exactly at the default budget (queries x restarts) on every image; one query or
    one image fewer, or no Square at all, is labelled with what ran."""
    from robustedge.config import default_of
    from robustedge.device.board.config import BenchConfig
    from robustedge.device.board.measure import weaker_than_default as weaker

    q = default_of(BenchConfig, "square_queries")
    r = default_of(BenchConfig, "square_restarts")
    assert (q, r) == (1000, 1)
    assert weaker(q, 1, 450, 450) is None
    assert weaker(q + 1, 1, 450, 450) is None
    assert weaker(q // 2, 2, 450, 450) is None  # the same budget split over two restarts
    assert weaker(q, 1, 449, 450) == "weaker than default: Square-1000 on 449 of 450 images"
    assert weaker(q - 1, 1, 450, 450) == "weaker than default: Square-999 on 450 of 450 images"
    assert weaker(q // 2 - 1, 2, 450, 450) == (
        "weaker than default: Square-499x2 on 450 of 450 images"
    )
    assert weaker(0, 1, 450, 450) == "weaker than default: no on-board Square attack"


def test_headline_is_the_lowest_figure_at_the_smallest_eps():
    """Suites first (the lowest of those at the smallest eps), else the strongest single attack
    at the smallest eps; on-manifold rows (eta) never; None without a robust figure."""
    from pathlib import Path

    from robustedge.report.collect import RunInfo, headline

    def run(accuracy, suites=()):
        suites = {k: {"suite": k.split(" ")[0], "label": f"worst of {k}", "n": 50} for k in suites}
        return RunInfo("m", Path("m"), "student", "prox", False, 0.9, 0.9, accuracy, suites)

    acc = {"pgd eps=0.1": 0.5, "square eps=0.1": 0.45, "pgd eps=0.05": 0.7, "fgsm eps=0.05": 0.75}
    acc |= {"onmanifold eta=0.01": 0.1}
    h = headline(run(acc))
    assert (h.key, h.acc, h.is_suite) == ("pgd eps=0.05", 0.7, False)
    assert h.label == "pgd eps=0.05 (strongest single attack; no suite run)"
    acc |= {"worst-case eps=0.1": 0.4, "aa eps=0.1": 0.35, "worst-case eps=0.2": 0.1}
    h = headline(run(acc, ["worst-case eps=0.1", "aa eps=0.1", "worst-case eps=0.2"]))
    assert (h.key, h.acc, h.is_suite) == ("aa eps=0.1", 0.35, True)
    assert h.label == "aa: worst of aa eps=0.1 (eps=0.1, n=50)"
    assert headline(run({"onmanifold eta=0.3": 0.2})) is None


def test_budget_probes_meet_a_limit_equal_to_the_measurement():
    """A candidate whose measurement equals the limit meets the budget; a hair below does
    not (the weight probe for flash, the channel probe for MACs / parameters)."""
    from robustedge.compress.budget.flash import SparsityProbe, stored_weights
    from robustedge.compress.budget.search import ChannelProbe
    from robustedge.models import ModelSpec, build_model

    torch.manual_seed(0)
    model = build_model(ModelSpec("lenet5", (1, 8, 8), 10))
    value = SparsityProbe(model, 0.0, stored_weights, grid=10)(5).value
    assert SparsityProbe(model, value, stored_weights, grid=10)(5).meets
    assert not SparsityProbe(model, value - 1e-6, stored_weights, grid=10)(5).meets
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    value = ChannelProbe(model, (1, 8, 8), 0.0, count, grid=8)(4).value
    assert ChannelProbe(model, (1, 8, 8), value, count, grid=8)(4).meets
    assert not ChannelProbe(model, (1, 8, 8), value - 1e-6, count, grid=8)(4).meets
