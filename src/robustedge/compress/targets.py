"""Which weights are prunable, masks over them, and sparsity accounting.

Policy: the weights of every ``nn.Conv2d`` and ``nn.Linear`` are prunable, except the first
conv (it sees raw pixels and holds few weights) and the final linear (one row per class),
unless ``include_first`` / ``include_last`` say otherwise. Biases and BatchNorm parameters are
never pruned unstructured. A mask is a ``{parameter name: bool tensor}`` dict (True = kept).
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn as nn

from robustedge.errors import RobustEdgeError

Masks = Dict[str, torch.Tensor]


def layer_modules(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """(module name, module) of every Conv2d / Linear in definition order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def prunable_modules(
    model: nn.Module, include_first: bool = False, include_last: bool = False
) -> List[Tuple[str, nn.Module]]:
    """Conv/Linear modules that the policy lets us prune (see module docstring)."""
    layers = layer_modules(model)
    if not layers:
        return []
    first = next((n for n, m in layers if isinstance(m, nn.Conv2d)), None)
    last = next((n for n, m in reversed(layers) if isinstance(m, nn.Linear)), None)
    keep = []
    for name, m in layers:
        if name == first and not include_first:
            continue
        if name == last and not include_last:
            continue
        keep.append((name, m))
    return keep


def require_prunable(
    model: nn.Module, include_first: bool = False, include_last: bool = False, what: str = "model"
) -> None:
    """One line naming ``model``'s Conv2d / Linear layers when the policy leaves it no layer
    to prune, or naming the first prunable layer whose weight is not a parameter (computed
    by a parametrization such as weight_norm: masking it would change nothing). Checked
    before any training."""
    mods = prunable_modules(model, include_first, include_last)
    for name, m in mods:
        if not isinstance(getattr(m, "weight", None), nn.Parameter):
            raise RobustEdgeError(
                f"{what}: layer {name} ({type(m).__name__}) has no weight parameter to prune "
                "(its weight is computed, e.g. by weight_norm or another parametrization); "
                "remove the parametrization (torch.nn.utils.parametrize."
                "remove_parametrizations) before compressing"
            )
    if mods:
        return
    layers = ", ".join(f"{n} ({type(m).__name__})" for n, m in layer_modules(model)) or "none"
    raise RobustEdgeError(
        f"{what} has no layer to prune: pruning skips the first Conv2d and the last Linear "
        f"(include_first / include_last); its layers: {layers}"
    )


def prunable_params(
    model: nn.Module, include_first: bool = False, include_last: bool = False
) -> Dict[str, nn.Parameter]:
    """``{"<module>.weight": parameter}`` of the prunable layers."""
    mods = prunable_modules(model, include_first, include_last)
    return {f"{n}.weight" if n else "weight": m.weight for n, m in mods}


def apply_masks(params: Dict[str, torch.Tensor], masks: Masks) -> None:
    """Zero the pruned entries in place."""
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].dtype))


def masks_from_weights(params: Dict[str, torch.Tensor]) -> Masks:
    """True where a weight is non-zero."""
    return {n: p.detach() != 0 for n, p in params.items()}


def zero_pruned_state(
    optimizer: torch.optim.Optimizer, params: Dict[str, nn.Parameter], masks: Masks
) -> None:
    """Zero the gradients and optimizer buffers (momentum, Adam moments) of pruned weights."""
    with torch.no_grad():
        for name, mask in masks.items():
            p = params[name]
            keep = mask.to(p.dtype)
            if p.grad is not None:
                p.grad.mul_(keep)
            for buf in optimizer.state.get(p, {}).values():
                if torch.is_tensor(buf) and buf.shape == p.shape:
                    buf.mul_(keep)


class MaskKeeper:
    """``after_step`` hook for a masked fine-tune: re-applies masks and clears pruned state.

    Pruned weights stay exactly zero even with momentum or Adam, whose buffers could
    otherwise move them again.
    """

    def __init__(
        self,
        params: Dict[str, nn.Parameter],
        masks: Masks,
        optimizer: Optional[torch.optim.Optimizer] = None,
    ) -> None:
        self.params, self.masks, self.optimizer = params, masks, optimizer
        self._handles: List[object] = []

    def attach(self) -> None:
        """Also zero pruned gradients during backward (before the optimizer sees them)."""
        for name, mask in self.masks.items():
            keep = mask.to(self.params[name].dtype)
            self._handles.append(self.params[name].register_hook(lambda g, k=keep: g * k))

    def detach(self) -> None:
        for h in self._handles:
            h.remove()  # type: ignore[attr-defined]
        self._handles = []

    def __call__(self, model: nn.Module) -> None:
        apply_masks(self.params, self.masks)
        if self.optimizer is not None:
            zero_pruned_state(self.optimizer, self.params, self.masks)


def sparsity_report(params: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """Per-layer and global fraction of exact zeros among the given weights."""
    layers, zeros, total = {}, 0, 0
    for name, p in params.items():
        z, n = int((p.detach() == 0).sum()), p.numel()
        layers[name] = {"numel": n, "zeros": z, "sparsity": z / n if n else 0.0}
        zeros, total = zeros + z, total + n
    return {
        "global": zeros / total if total else 0.0,
        "prunable": total,
        "zeros": zeros,
        "layers": layers,
    }


def global_sparsity(params: Iterable[torch.Tensor]) -> float:
    """Fraction of exact zeros over all given tensors."""
    z = n = 0
    for p in params:
        z += int((p.detach() == 0).sum())
        n += p.numel()
    return z / n if n else 0.0


def count_nonzero(model: nn.Module) -> int:
    return sum(int((p.detach() != 0).sum()) for p in model.parameters())


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def optimizer_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes held in the optimizer's state tensors (momentum, Adam moments)."""
    return tensor_bytes(
        v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)
    )
