"""Raw-data tasks in the interleaved layout (DESIGN §4.2; Garg et al. 2022, Bai et al. 2023).

A sequence is N pairs (x_i, y_i) written as 2N tokens of width d+1: x-token i at
position 2i is ``[x_i, 0]``, y-token i at position 2i+1 is ``[0…0, y_i]``. The model
reads out at every x-token; its prediction at x-token i sees the i earlier pairs
and is scored against ``y_i`` (``target [B, N]``).

- ``mixed_noise_regression``: x ~ N(0, I_d), w ~ N(0, I_d), y = xᵀw/√d + σz, with σ
  drawn per sequence from ``noise_levels`` with ``noise_probs``.
- ``linear_or_logistic``: per sequence, that regression with probability
  ``p_regression``, else classification y = sign(xᵀw) ∈ {−1, +1} (σ = 0).

All randomness comes from the ``torch.Generator`` passed in, never the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import Tensor

from selectlens.config import DataConfig


@dataclass
class RawBatch:
    """A batch of raw-data sequences with their ground truth."""

    tokens: Tensor  # [B, 2N, d+1]: x-token i at 2i = [x_i, 0]; y-token i at 2i+1 = [0…0, y_i]
    target: Tensor  # [B, N]: y_i, predicted at x-token i from the i earlier pairs
    x: Tensor  # [B, N, d]
    y: Tensor  # [B, N]
    w: Tensor  # [B, d]
    sigma: Tensor  # [B]: noise sd (0 for classification sequences)
    is_regression: Tensor  # [B] bool

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device: torch.device | str) -> "RawBatch":
        return RawBatch(**{k: v.to(device) for k, v in self.as_dict().items()})

    def __getitem__(self, index: slice | Tensor) -> "RawBatch":
        return RawBatch(**{k: v[index] for k, v in self.as_dict().items()})

    def __len__(self) -> int:
        return self.tokens.shape[0]


def interleave(x: Tensor, y: Tensor) -> Tensor:
    """``x [B, N, d]``, ``y [B, N]`` → tokens ``[B, 2N, d+1]`` (x-tokens at even positions)."""
    B, N, d = x.shape
    tokens = x.new_zeros(B, N, 2, d + 1)
    tokens[:, :, 0, :d] = x
    tokens[:, :, 1, d] = y
    return tokens.reshape(B, 2 * N, d + 1)


class RawTask:
    """Base class of the raw-data tasks: samples x, w, z, σ and the task type, builds tokens."""

    name: ClassVar[str]
    loss: ClassVar[str] = "mse"
    layout: ClassVar[str] = "interleaved"

    def __init__(self, data: DataConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.data = data
        self.device = torch.device(device)
        self.dtype = dtype
        self.noise_levels = list(data.noise_levels)
        self.noise_probs = data.noise_weights

    def sample_sigma(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """``[B]`` noise sds, i.i.d. from ``noise_levels`` with probabilities ``noise_probs``."""
        probs = torch.tensor(self.noise_probs, dtype=torch.float64, device=self.device)
        idx = torch.multinomial(probs, batch_size, replacement=True, generator=generator)
        return torch.tensor(self.noise_levels, dtype=self.dtype, device=self.device)[idx]

    def sample_is_regression(self, batch_size: int, generator: torch.Generator) -> Tensor:
        """``[B]`` bool: which sequences are regression (all, unless the task mixes types)."""
        return torch.ones(batch_size, dtype=torch.bool, device=self.device)

    def sample(self, batch_size: int, generator: torch.Generator) -> RawBatch:
        """Draw ``batch_size`` sequences of ``data.N`` pairs."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        B, N, d = batch_size, self.data.N, self.data.d_d
        kw = {"device": self.device, "dtype": self.dtype}
        x = torch.randn(B, N, d, generator=generator, **kw)
        w = torch.randn(B, d, generator=generator, **kw)
        z = torch.randn(B, N, generator=generator, **kw)
        sigma = self.sample_sigma(B, generator)
        is_regression = self.sample_is_regression(B, generator)
        return self.build(x, w, z, sigma, is_regression)

    @staticmethod
    def build(x: Tensor, w: Tensor, z: Tensor, sigma: Tensor, is_regression: Tensor) -> RawBatch:
        """Labels and tokens from given ground truth (e.g. the same x, w, z under another σ).

        Regression sequences: y = xᵀw/√d + σz; classification sequences: y = sign(xᵀw)
        (+1 at 0) and σ is recorded as 0.
        """
        d = x.shape[-1]
        clean = (x @ w.unsqueeze(-1)).squeeze(-1)  # [B, N]
        regression = clean / math.sqrt(d) + sigma.unsqueeze(-1) * z
        sign = torch.where(clean >= 0, 1.0, -1.0).to(x.dtype)
        y = torch.where(is_regression.unsqueeze(-1), regression, sign)
        sigma = torch.where(is_regression, sigma, torch.zeros_like(sigma))
        return RawBatch(tokens=interleave(x, y), target=y.clone(), x=x, y=y, w=w, sigma=sigma,
                        is_regression=is_regression.clone())


class MixedNoiseRegressionTask(RawTask):
    """Linear regression whose noise level σ is drawn per sequence (Bai et al.'s noisy-ridge mixture)."""

    name = "mixed_noise_regression"


class LinearOrLogisticTask(RawTask):
    """Per sequence, noisy linear regression (probability ``p_regression``) or y = sign(xᵀw)."""

    name = "linear_or_logistic"

    def sample_is_regression(self, batch_size: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(batch_size, generator=generator, device=self.device, dtype=torch.float64)
        return u < self.data.p_regression


RAW_TASKS: dict[str, type[RawTask]] = {
    MixedNoiseRegressionTask.name: MixedNoiseRegressionTask,
    LinearOrLogisticTask.name: LinearOrLogisticTask,
}
