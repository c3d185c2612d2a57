"""Means with normal-approximation 95% confidence intervals, plain and paired."""

from __future__ import annotations

import math

import torch
from torch import Tensor

Z95 = 1.959963984540054


def mean_ci(values: Tensor) -> tuple[float, float, float]:
    """``(mean, low, high)``: the 95% CI of the mean, ``mean ± 1.96·sd/√n``."""
    v = values.double().flatten()
    n = v.numel()
    m = float(v.mean())
    if n < 2:
        return m, float("nan"), float("nan")
    half = Z95 * float(v.std(unbiased=True)) / math.sqrt(n)
    return m, m - half, m + half


def paired_diff_ci(a: Tensor, b: Tensor) -> tuple[float, float, float]:
    """``(mean, low, high)`` of ``a − b`` on the same items: the CI that decides which is better."""
    if a.shape != b.shape:
        raise ValueError("paired samples need the same shape")
    return mean_ci(a.double() - b.double())


def bootstrap_ratio_ci(
    num: Tensor, den: Tensor, *, resamples: int = 2000, seed: int = 0, chunk: int = 100
) -> tuple[float, float, float]:
    """``(ratio, low, high)``: ``mean(num)/mean(den)`` with a 95% percentile bootstrap CI, resampling the
    items (paired: the same indices for ``num`` and ``den``). ``num``, ``den``: ``[n]`` per-item values."""
    if num.shape != den.shape:
        raise ValueError("paired samples need the same shape")
    a, b = num.double().flatten().cpu(), den.double().flatten().cpu()
    n = a.numel()
    gen = torch.Generator().manual_seed(seed)
    ratios = []
    for start in range(0, resamples, chunk):
        idx = torch.randint(n, (min(chunk, resamples - start), n), generator=gen)  # [c, n]
        ratios.append(a[idx].mean(1) / b[idx].mean(1))
    r = torch.cat(ratios)
    lo, hi = torch.quantile(r, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(a.mean() / b.mean()), lo, hi
