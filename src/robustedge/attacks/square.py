"""Square Attack, Linf (Andriushchenko et al., ECCV 2020): score-based black box.

A thin torch wrapper around :func:`robustedge.attacks.square_core.square_linf_numpy`, which
holds the whole algorithm in numpy so the same code attacks a deployed (e.g. int8 TFLite)
model on a board. Only the model's outputs are used, never its gradients.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn

from robustedge.attacks.base import ATTACKS, Attack, AttackSpec
from robustedge.attacks.square_core import N_QUERIES, P_INIT, SCORE_KINDS, square_linf_numpy

logger = logging.getLogger(__name__)


@ATTACKS.register("square")
class Square(Attack):
    """Linf Square Attack with a query budget ``n_queries`` per sample and restart.

    ``scores`` says what the model returns: ``"logits"`` (default) or ``"probs"`` (softmax
    outputs, compared in log space). ``last_queries`` holds the queries spent per sample.
    """

    name = "square"
    short_name = "Square"
    default_steps = N_QUERIES  # the spec's steps are Square's queries per sample and restart
    steps_name = "queries"
    has_restarts = True

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        n_queries: int = default_steps,
        p_init: float = P_INIT,
        restarts: int = 1,
        norm: str = "linf",
        scores: str = "logits",
        batch_size: int = 1024,
        bounds: Tuple[float, float] = (0.0, 1.0),
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__(model, eps, bounds, generator)
        if n_queries < 1 or restarts < 1 or not (0 < p_init <= 1):
            raise ValueError(
                f"square needs n_queries >= 1, restarts >= 1, 0 < p_init <= 1 "
                f"(got {n_queries}, {restarts}, {p_init})"
            )
        if norm != "linf":
            raise ValueError(f"square is implemented for norm 'linf' only, got '{norm}'")
        self.n_queries, self.p_init, self.restarts = n_queries, p_init, restarts
        if scores not in SCORE_KINDS:
            raise ValueError(f"square scores must be one of {SCORE_KINDS}, got '{scores}'")
        self.scores, self.batch_size = scores, batch_size
        self.last_queries: Optional[np.ndarray] = None  # queries per sample of the last call

    @classmethod
    def from_spec(cls, model: nn.Module, spec: AttackSpec, **kwargs: Any) -> Square:
        queries, restarts = cls.spec_settings(spec)
        params = {**spec.params, **kwargs}
        return cls(model, spec.eps, n_queries=queries, restarts=restarts, norm=spec.norm, **params)

    def _perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        device = x.device
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator))

        @torch.no_grad()
        def predict(batch: np.ndarray) -> np.ndarray:
            outs = [
                self.model(torch.from_numpy(batch[i : i + self.batch_size]).to(device))
                for i in range(0, len(batch), self.batch_size)
            ]
            return torch.cat(outs).float().cpu().numpy()

        x_adv, queries = square_linf_numpy(
            predict,
            x.cpu().numpy(),
            y.cpu().numpy(),
            self.eps,
            self.n_queries,
            self.p_init,
            np.random.default_rng(seed),
            self.restarts,
            (self.lo, self.hi),
            self.scores,
        )
        self.last_queries = queries
        logger.debug("square: %d samples, mean queries %.1f", len(x), float(queries.mean()))
        return torch.from_numpy(x_adv).to(device=device, dtype=x.dtype)
