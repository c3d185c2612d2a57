"""Primitives shared by the selection-layout baselines: losses and views of a :class:`TaskBatch`."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from selectlens.tasks.selection import TaskBatch

Predictor = Callable[[TaskBatch], Tensor]
_EPS = 1e-7


def pointwise_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Elementwise loss: ``mse`` → squared error (the Brier score for probabilities); ``bce`` → log loss."""
    if kind == "mse":
        return (pred - target) ** 2
    if kind == "bce":
        p = pred.clamp(_EPS, 1 - _EPS)
        return -(target * p.log() + (1 - target) * (1 - p).log())
    raise ValueError(f"unknown loss {kind!r}")


def candidate_predictions(batch: TaskBatch) -> Tensor:
    """``[B, K]`` every candidate's prediction at the last position."""
    return batch.tokens[:, -1, :-1]


def visible(batch: TaskBatch) -> tuple[Tensor, Tensor]:
    """``(F_v [B, N−1, K], y_v [B, N−1])``: the candidates' predictions and the labels of the visible tokens."""
    return batch.tokens[:, :-1, :-1], batch.tokens[:, :-1, -1]


def context_errors(batch: TaskBatch, kind: str) -> Tensor:
    """``[B, K]`` each candidate's mean loss on the N−1 visible tokens."""
    preds, labels = visible(batch)
    return pointwise_loss(preds, labels.unsqueeze(-1), kind).mean(dim=1)


def pick(values: Tensor, index: Tensor) -> Tensor:
    """``values[b, index[b]]`` for ``values [B, K]``, ``index [B]``."""
    return values.gather(1, index.unsqueeze(1)).squeeze(1)


def fit_log_grid(loss, lo: float, hi: float, points: int, device) -> float:
    """``10**t`` minimising ``loss(t_grid [G]) -> [G]`` over a log10 grid ``lo..hi``, refined around the best point."""
    grid = torch.linspace(lo, hi, points, dtype=torch.float64, device=device)
    best = float(grid[loss(grid).argmin()])
    step = (hi - lo) / (points - 1)
    fine = torch.linspace(best - step, best + step, 41, dtype=torch.float64, device=device)
    return float(10.0 ** fine[loss(fine).argmin()])
