"""Images as torch tensors for training and evaluation, streamed ones included.

:func:`as_images` is what every training and evaluation entry calls on a data set's
``x_train`` / ``x_test``: an array in memory becomes one tensor (``torch.as_tensor``, as
before); a streamed :class:`~robustedge.data.source.ImageSource` becomes a
:class:`TensorImages` view, which reads only the batch each ``view[index]`` asks for.
"""

from __future__ import annotations

from typing import Any, Tuple, Union

import numpy as np
import torch

from robustedge.data.source import ImageSource, index_array

__all__ = ["TensorImages", "as_images"]


class TensorImages:
    """A torch view of an :class:`ImageSource`: ``len``, ``shape``, ``dtype`` and
    ``view[index]`` (int, slice, index tensor or array) -> a float32 tensor of those images."""

    dtype = torch.float32

    def __init__(self, source: ImageSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.source.shape)

    def __getitem__(self, index: Any) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return torch.from_numpy(self.source[int(index)])
        return torch.from_numpy(self.source.read(index_array(index, len(self.source))))

    def __repr__(self) -> str:
        return f"TensorImages({self.source!r})"


def as_images(x: Any) -> Union[torch.Tensor, TensorImages]:
    """``x`` as something indexed per batch: a tensor for arrays in memory, a
    :class:`TensorImages` view for a streamed source (never read whole)."""
    if isinstance(x, ImageSource):
        return TensorImages(x)
    return torch.as_tensor(x)
