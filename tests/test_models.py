"""Model registry: every model builds for digits/MNIST/CIFAR shapes; checkpoints round-trip."""

from __future__ import annotations

import json
import textwrap
import uuid

import pytest
import torch
import torch.nn as nn

from robustedge.errors import CheckpointError, RobustEdgeError, UnknownNameError
from robustedge.models import MODELS, ModelSpec, build_model, count_params, load_model, save_model

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
# Small variants for the slower tests (pruning, checkpoints); defaults are tested for shape.
SMALL = {"vgg": {"depth": 11, "width": 0.25}, "mobilenetv2": {"width": 0.25}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a busy 2-core machine two threads spin and run ~50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _build(name: str, shape=(1, 8, 8), small: bool = False, **kw) -> nn.Module:
    kwargs = {**(SMALL.get(name, {}) if small else {}), **kw}
    return build_model(ModelSpec(name, shape, 10, kwargs))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", MODELS.names())
def test_builds_forward_shape_and_deterministic_eval(name, shape):
    torch.manual_seed(0)
    model = _build(name, shape).eval()
    x = torch.rand(2, *shape)
    with torch.no_grad():
        out1, out2 = model(x), model(x)
    assert out1.shape == (2, 10)
    assert torch.isfinite(out1).all()
    assert torch.equal(out1, out2)


def test_param_counts_are_the_usual_ones():
    assert count_params(_build("tiny")) < 10_000
    v16 = _build("vgg", (3, 32, 32), depth="vgg16", width=1.0)
    conv = sum(p.numel() for p in v16.parameters() if p.dim() == 4)
    assert 14.6e6 < conv < 14.8e6  # VGG-16's ~14.7M conv weights
    assert count_params(v16) < 15.0e6  # + BatchNorm and a 512 x 10 head
    assert 0.26e6 < count_params(_build("resnet20", (3, 32, 32))) < 0.28e6  # He et al.: 0.27M
    assert 2.1e6 < count_params(_build("mobilenetv2", (3, 32, 32))) < 2.4e6


def test_resnet8_matches_the_mlperf_tiny_reference():
    """resnet_v1_eembc: Keras reports 78,666 parameters (480 of them BN running statistics)."""
    model = _build("resnet8", (3, 32, 32))
    bn_stats = sum(b.numel() for n, b in model.named_buffers() if "running" in n)
    assert count_params(model) == 78_186
    assert count_params(model) + bn_stats == 78_666
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [16, 16, 16, 32, 32, 32, 64, 64, 64]
    shortcuts = [m for m in convs if m.kernel_size == (1, 1)]
    assert [(m.in_channels, m.out_channels, m.stride) for m in shortcuts] == [
        (16, 32, (2, 2)),
        (32, 64, (2, 2)),
    ]
    assert all(m.bias is not None for m in convs)
    assert count_params(_build("resnet8", (3, 32, 32), width=0.5)) < 0.3 * 78_186


@pytest.mark.parametrize("name", ["vgg", "resnet20", "mobilenetv2"])
def test_width_multiplier_shrinks_model(name):
    full = count_params(_build(name, depth=11) if name == "vgg" else _build(name))
    half = count_params(
        _build(name, depth=11, width=0.5) if name == "vgg" else _build(name, width=0.5)
    )
    assert half < 0.5 * full


def test_vgg_depths_and_bad_depth():
    convs = {
        d: sum(isinstance(m, nn.Conv2d) for m in _build("vgg", depth=d, width=0.25).modules())
        for d in ("vgg11", 13, "16")
    }
    assert convs == {"vgg11": 8, 13: 10, "16": 13}
    with pytest.raises(ValueError, match="vgg11"):
        _build("vgg", depth=19)


@pytest.mark.parametrize(("shape", "pools"), [((1, 8, 8), 3), ((1, 28, 28), 4), ((3, 32, 32), 5)])
def test_vgg_skips_pools_below_1x1(shape, pools):
    model = _build("vgg", shape, small=True).eval()
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == pools
    with torch.no_grad():
        feat = model.features(torch.rand(1, *shape))
    assert min(feat.shape[-2:]) >= 1


@pytest.mark.parametrize(
    ("name", "shape", "final"),
    [
        ("resnet20", (1, 8, 8), 2),
        ("resnet20", (3, 32, 32), 8),
        ("resnet20", (1, 2, 2), 2),
        ("resnet8", (3, 32, 32), 8),
        ("resnet8", (1, 8, 8), 2),
        ("mobilenetv2", (1, 8, 8), 2),
        ("mobilenetv2", (3, 32, 32), 4),
        ("mobilenetv2", (3, 64, 64), 2),
        ("mobilenetv2", (1, 3, 3), 2),
    ],
)
def test_downsampling_stops_at_2x2(name, shape, final):
    model = _build(name, shape, small=True).eval()
    seen = {}

    def hook(module, inp, out):
        seen["hw"] = tuple(inp[0].shape[-2:])

    model.pool.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.rand(1, *shape))
    assert tuple(seen["hw"]) == (final, final)


def test_resnet20_uses_conv_shortcuts():
    model = _build("resnet20")
    projections = [
        m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)
    ]
    assert len(projections) == 2  # option B at the two stage transitions
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 19 + 2


def test_mobilenetv2_is_depthwise():
    model = _build("mobilenetv2", small=True)
    dw = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(dw) == 17 and all(m.groups == m.in_channels == m.out_channels for m in dw)


@pytest.mark.parametrize("name", ["vgg", "resnet20", "resnet8", "mobilenetv2"])
def test_channel_pruning_can_trace(name):
    tp = pytest.importorskip("torch_pruning", reason="torch-pruning is a base dependency")
    model = _build(name, small=True).eval()
    example = torch.rand(1, 1, 8, 8)
    before = count_params(model)
    pruner = tp.pruner.MagnitudePruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=0.5,
        ignored_layers=[m for m in model.modules() if isinstance(m, nn.Linear)],
    )
    pruner.step()
    assert count_params(model) < 0.5 * before
    assert model(example).shape == (1, 10)


def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownNameError) as info:
        build_model(ModelSpec("no-such-net", (1, 8, 8), 10))
    for name in ("tiny", "lenet5", "vgg", "resnet20", "mobilenetv2"):
        assert name in str(info.value)


# ---- checkpoints ----------------------------------------------------------------------


def _with_stats(model: nn.Module, shape) -> nn.Module:
    """Move BatchNorm running stats off their defaults so buffers are checked too."""
    model.train()
    with torch.no_grad():
        model(torch.rand(4, *shape))
    return model.eval()


@pytest.mark.parametrize("name", MODELS.names())
def test_save_load_round_trip_by_path(tmp_path, name):
    torch.manual_seed(1)
    spec = ModelSpec(name, (1, 8, 8), 10, SMALL.get(name, {}))
    model = _with_stats(build_model(spec), spec.input_shape)
    save_model(tmp_path, model, spec)
    loaded, spec2 = load_model(str(tmp_path))  # by path alone
    assert spec2 == spec
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded.eval()(x))


def test_corrupt_weights_file_is_one_line_error(tmp_path):
    spec = ModelSpec("tiny", (1, 8, 8), 10)
    save_model(tmp_path, build_model(spec), spec)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    assert "corrupt" in str(info.value) and "\n" not in str(info.value)


def test_weights_not_matching_architecture(tmp_path):
    spec = ModelSpec("tiny", (1, 8, 8), 10)
    save_model(tmp_path, build_model(spec), spec)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["spec"]["kwargs"] = {"width": 16}
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match") as info:
        load_model(tmp_path)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(tmp_path, model=build_model(ModelSpec("resnet20", (1, 8, 8), 10)))


def test_missing_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope")


# ---- a user's own model: module.path:factory -------------------------------------------

USER_MODULE = """
import torch.nn as nn

def make(input_shape, num_classes, hidden=16):
    c, h, w = input_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(),
                         nn.Linear(hidden, num_classes))

not_callable = 3

def not_a_module(input_shape, num_classes):
    return "nope"
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"user_model_{uuid.uuid4().hex[:8]}"
    src = tmp_path / "src"
    src.mkdir()
    (src / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(src))
    return name


def test_user_factory_builds_and_round_trips(tmp_path, user_module):
    spec = ModelSpec(f"{user_module}:make", (1, 8, 8), 10, {"hidden": 12})
    model = build_model(spec).eval()
    assert count_params(model) == 64 * 12 + 12 + 12 * 10 + 10
    run = tmp_path / "run"
    run.mkdir()
    save_model(run, model, spec)
    loaded, spec2 = load_model(run)
    assert spec2.name == f"{user_module}:make"
    x = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("no_such_module_xyz:make", "cannot import model module"),
        ("{mod}:missing", "not a callable factory"),
        ("{mod}:not_callable", "not a callable factory"),
        ("{mod}:not_a_module", "not a Module"),
        ("{mod}:make", "cannot build model"),  # with an unknown kwarg
    ],
)
def test_user_factory_errors(user_module, suffix, message):
    name = suffix.format(mod=user_module)
    kwargs = {"depth": 3} if suffix == "{mod}:make" else {}
    with pytest.raises(RobustEdgeError, match=message) as info:
        build_model(ModelSpec(name, (1, 8, 8), 10, kwargs))
    assert "\n" not in str(info.value)
