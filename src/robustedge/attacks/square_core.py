"""Square Attack, Linf, in numpy only (Andriushchenko et al., ECCV 2020).

A score-based black-box attack: it needs only the model's outputs (logits or probabilities),
no gradients. Self-contained on purpose (numpy + stdlib, no torch, no robustedge imports) so
the device harness can load this file by path on a board and attack the deployed int8 model.

Algorithm (untargeted, following the authors' reference code):
  * query once on the clean inputs; already misclassified samples are left as they are;
  * start from vertical stripes: a random +-eps per (channel, column), the same down each column;
  * each iteration, for every sample not yet fooled, pick one random s x s window (s from the
    piecewise-constant schedule of the fraction ``p`` of pixels changed, ``p_init`` at the
    start) and set the perturbation there to a random +-eps per channel; keep the change only if
    the margin loss ``score[y] - max_{k != y} score[k]`` decreases;
  * a sample stops when its margin is <= 0 (fooled) or after ``n_queries`` queries
    (the stripe start counts as one);
  * ``restarts`` > 1 reruns on the samples still not fooled, keeping the lowest margin.

Small differences from the reference code: a window may sit at every offset (the reference
never picks the last one), and a proposal that would not change the image is redrawn whole
(offset and signs) at most ``MAX_RESAMPLES`` times instead of in an unbounded loop. On 8x8
inputs the window side goes from 7 (p = 0.8) down to 1 pixel, never below.
"""

from __future__ import annotations

import math
from typing import Callable, Tuple, Union

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]
RngLike = Union[np.random.Generator, int, None]
MAX_RESAMPLES = 10  # tries to find a window proposal that changes the current image
PROB_FLOOR = 1e-45  # smallest float32 denormal: log(0) is avoided for "probs" scores
SCORE_KINDS = ("logits", "probs")
N_QUERIES = 1000  # the one default of Square's queries per image and restart (Square-1000)
P_INIT = 0.8  # the one default of the initial fraction of pixels changed (paper's Linf setting)


def p_schedule(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels to change at iteration ``it`` of ``n_iters`` (paper, Sec. 3.1/App.).

    The reference schedule is written for 10,000 iterations and rescaled to ``n_iters``.
    """
    it = int(it / max(n_iters, 1) * 10000)
    for bound, div in (
        (10, 1),
        (50, 2),
        (200, 4),
        (500, 8),
        (1000, 16),
        (2000, 32),
        (4000, 64),
        (6000, 128),
        (8000, 256),
        (10000, 512),
    ):
        if it <= bound:
            return p_init / div
    return p_init


def margin_loss(scores: np.ndarray, y: np.ndarray, kind: str = "logits") -> np.ndarray:
    """``score[y] - max_{k != y} score[k]`` per row; <= 0 means misclassified.

    ``kind="probs"`` takes the log first: saturated probabilities (p_y == 1.0 in float32) would
    otherwise make the margin flat and the search blind.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if kind == "probs":
        scores = np.log(np.maximum(scores, PROB_FLOOR))
    rows = np.arange(len(y))
    correct = scores[rows, y]
    other = scores.copy()
    other[rows, y] = -np.inf
    return correct - other.max(axis=1)


def square_size(p: float, h: int, w: int) -> int:
    """Side of the square window: sqrt(p * h * w) rounded, at least 1, at most min(h, w) - 1."""
    s = int(round(math.sqrt(p * h * w)))
    return max(1, min(s, min(h, w) - 1))


def square_linf_numpy(
    predict_fn: PredictFn,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    n_queries: int = N_QUERIES,
    p_init: float = P_INIT,
    rng: RngLike = None,
    restarts: int = 1,
    bounds: Tuple[float, float] = (0.0, 1.0),
    scores: str = "logits",
) -> Tuple[np.ndarray, np.ndarray]:
    """Run the Linf Square Attack on a batch.

    Args:
        predict_fn: maps an N x C x H x W float32 batch to scores N x K (logits or probs).
        x: N x C x H x W inputs within ``bounds``; y: N integer labels.
        eps: Linf radius; n_queries: query budget per sample and restart (>= 1).
        p_init: initial fraction of pixels changed (0.8 in the paper's Linf experiments).
        rng: a ``numpy.random.Generator`` or a seed; restarts: independent runs (>= 1).
        bounds: valid input range; scores: ``"logits"`` or ``"probs"`` (what predict_fn returns;
            any monotone scores work as logits, probabilities are compared in log space).
    Returns:
        ``(x_adv, queries)``: x_adv (float32, ``||x_adv - x||_inf <= eps``, within bounds) and
        the number of model queries spent per sample (including the clean query).
    """
    if not (eps >= 0) or n_queries < 1 or restarts < 1 or not (0 < p_init <= 1):
        raise ValueError(
            f"square attack needs eps >= 0, n_queries >= 1, restarts >= 1 and 0 < p_init <= 1 "
            f"(got {eps}, {n_queries}, {restarts}, {p_init})"
        )
    if scores not in SCORE_KINDS:
        raise ValueError(f"scores must be one of {SCORE_KINDS}, got '{scores}'")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"square attack needs x as N x C x H x W and N labels, got {x.shape}")
    x_best = x.copy()
    predict = _scorer(predict_fn, scores)
    margin = predict(x, y)
    queries = np.ones(len(x), dtype=np.int64)
    if eps == 0:
        return x_best, queries
    for _ in range(restarts):
        todo = np.flatnonzero(margin > 0)
        if len(todo) == 0:
            break
        x_run, m_run, q_run = _one_run(
            predict, x[todo], y[todo], eps, n_queries, p_init, rng, bounds
        )
        queries[todo] += q_run
        better = m_run < margin[todo]
        x_best[todo[better]] = x_run[better]
        margin[todo[better]] = m_run[better]
    return x_best, queries


def _scorer(predict_fn: PredictFn, kind: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(x, y) -> margins, checking what predict_fn returns."""

    def predict(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.asarray(predict_fn(x))
        if out.ndim != 2 or len(out) != len(x):
            raise ValueError(f"predict_fn must return N x K scores for N={len(x)}, got {out.shape}")
        return margin_loss(out, y, kind)

    return predict


def _one_run(predict, x, y, eps, n_queries, p_init, rng, bounds):
    """One run from the stripe start; returns (x_best, margin, queries) for these samples."""
    lo, hi = bounds
    n, c, h, w = x.shape
    stripes = rng.choice([-eps, eps], size=(n, c, 1, w)).astype(np.float32)
    x_best = np.clip(x + stripes, lo, hi).astype(np.float32)
    margin = predict(x_best, y)
    queries = np.ones(n, dtype=np.int64)
    for it in range(n_queries - 1):
        active = np.flatnonzero(margin > 0)
        if len(active) == 0:
            break
        s = square_size(p_schedule(p_init, it, n_queries), h, w)
        x_new = _propose(x[active], x_best[active], eps, s, rng, bounds)
        m_new = predict(x_new, y[active])
        queries[active] += 1
        better = m_new < margin[active]
        x_best[active[better]] = x_new[better]
        margin[active[better]] = m_new[better]
    return x_best, margin, queries


def _propose(x, x_best, eps, s, rng, bounds):
    """New candidates: x_best with one random s x s window set to +-eps per channel."""
    lo, hi = bounds
    n, c, h, w = x.shape
    delta = x_best - x
    todo = np.arange(n)
    for _ in range(MAX_RESAMPLES):
        r0 = rng.integers(0, h - s + 1, size=len(todo))
        c0 = rng.integers(0, w - s + 1, size=len(todo))
        rows = np.arange(h)[None, :]
        cols = np.arange(w)[None, :]
        in_r = (rows >= r0[:, None]) & (rows < r0[:, None] + s)
        in_c = (cols >= c0[:, None]) & (cols < c0[:, None] + s)
        window = in_r[:, None, :, None] & in_c[:, None, None, :]
        signs = rng.choice([-eps, eps], size=(len(todo), c, 1, 1)).astype(np.float32)
        delta[todo] = np.where(window, signs, delta[todo])
        cand = np.clip(x[todo] + delta[todo], lo, hi)
        same = np.all(np.abs(cand - x_best[todo]) < 1e-7, axis=(1, 2, 3))
        todo = todo[same]  # a proposal that changes nothing wastes a query: draw again
        if len(todo) == 0:
            break
    return np.clip(x + delta, lo, hi).astype(np.float32)
