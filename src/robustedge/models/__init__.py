"""Model registry: tiny test CNNs, MLPerf Tiny's ResNet-8, up to VGG/ResNet-class networks."""

from robustedge.models import mobilenet as _mobilenet  # noqa: F401
from robustedge.models import resnet as _resnet  # noqa: F401
from robustedge.models import resnet8 as _resnet8  # noqa: F401
from robustedge.models import small as _small  # noqa: F401  (registers)
from robustedge.models import vgg as _vgg  # noqa: F401
from robustedge.models.base import MODELS, ModelSpec, build_model, count_params
from robustedge.models.checkpoint import load_model, load_spec, safe_torch_load, save_model
from robustedge.models.macs import count_macs

__all__ = [
    "MODELS",
    "ModelSpec",
    "build_model",
    "count_macs",
    "count_params",
    "load_model",
    "load_spec",
    "save_model",
    "safe_torch_load",
]
