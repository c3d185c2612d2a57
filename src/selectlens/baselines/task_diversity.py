"""Baselines of task diversity (docs/design.md#dmmse): dMMSE, the posterior mean over the pool (Bayes for
the training prior), beside the raw-data baselines, whose ridge at λ = dσ² is Bayes for the Gaussian
prior (fresh weights)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from selectlens.baselines.raw import RawPredictor, RawSuite
from selectlens.baselines.suite import register_suite
from selectlens.tasks.task_diversity import TaskDiversityTask

_CHUNK_ELEMENTS = 1 << 24  # float64 elements of the [chunk, N, M] residual table


def dmmse(x: Tensor, y: Tensor, pool: Tensor, sigma: float) -> Tensor:
    """``[B, N]`` posterior-mean prediction of ``y_n`` from the first n pairs, under w uniform over ``pool [M, d]``.

    ``r_m(n) = Σ_{i<n} (y_i − x_iᵀw_m/√d)²``, weights ``softmax_m(−r_m/(2σ²))``, prediction
    ``Σ_m π_m x_nᵀw_m/√d``; at n = 0 the pool average. float64, every prefix at once.
    """
    B, N, d = x.shape
    M = pool.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // (N * M))
    out = []
    P = pool.to(device=x.device, dtype=torch.float64)
    for i in range(0, B, chunk):
        X, Y = x[i : i + chunk].double(), y[i : i + chunk].double()
        f = X @ P.T / math.sqrt(d)  # [b, N, M]: each pool vector's prediction
        sq = (Y.unsqueeze(-1) - f) ** 2
        r = torch.cumsum(sq, 1) - sq  # [b, N, M]: residuals of the pairs before n
        weights = torch.softmax(-r / (2 * sigma**2), dim=-1)
        out.append((weights * f).sum(-1))
    return torch.cat(out)


@register_suite(TaskDiversityTask)
class TaskDiversitySuite(RawSuite):
    """The raw-data baselines plus ``dmmse`` (honest); the reference is dMMSE, Bayes for the training prior."""

    SEES = {**RawSuite.SEES, "dmmse": "honest"}

    def reference_name(self) -> str:
        return "dmmse"

    def predictors(self, fit: Any = None) -> dict[str, RawPredictor]:
        out = super().predictors(fit)
        pool, sigma = self.task.pool, self.task.noise_levels[0]
        out["dmmse"] = lambda batch: dmmse(batch.x, batch.y, pool, sigma).to(batch.x.dtype)
        return out
