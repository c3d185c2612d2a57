"""Means with normal-approximation 95% confidence intervals, plain and paired."""

from __future__ import annotations

import math

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
