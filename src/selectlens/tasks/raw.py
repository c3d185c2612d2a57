"""Raw-data tasks: the transformer reads (x, y) pairs itself (docs/design.md#raw-tasks; Garg et al.
2022, Bai et al. 2023).

A sequence is N pairs (x_i, y_i), x ~ N(0, I_d), w ~ N(0, I_d). Two token layouts (``data.layout``):

* ``interleaved`` — 2N tokens of width d+1: x-token i at position 2i is ``[x_i, 0]``, y-token i
  at 2i+1 is ``[0…0, y_i]``; the model reads out at every x-token;
* ``per_example`` — N tokens of width d+1: token i is ``[x_i, y_{i−1}]`` (y_{−1} = 0); the
  model reads out at every token. Half the sequence length, the same information: the read-out
  at token i sees x_0 … x_i and y_0 … y_{i−1}, exactly the i earlier pairs and the query.

Either way the prediction at read-out i is scored against ``y_i`` (``target [B, N]``).

- ``mixed_noise_regression``: y = xᵀw/√d + σz, with σ drawn per sequence from ``noise_levels``
  with ``noise_probs``.
- ``linear_or_logistic``: per sequence, that regression with probability ``p_regression``, else
  classification y = sign(xᵀw) ∈ {−1, +1} (σ = 0).

All randomness comes from the ``torch.Generator`` passed in, never the global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import ClassVar, Literal

import torch
from torch import Tensor

from pydantic import Field, field_validator, model_validator

from selectlens.config import DataConfig, positive_list
from selectlens.tasks.protocol import Batch, PairedBatches, TaskFamily

LAYOUTS = ("interleaved", "per_example")


class RawData(DataConfig):
    """``data`` keys of the raw-data tasks (``N`` pairs of width ``d_d``)."""

    supports_curriculum = True
    supports_conditional_mean = True
    supports_position_weights = True

    task: str = "mixed_noise_regression"
    N: int = Field(20, ge=2, description="Pairs (x, y) per sequence.")
    layout: Literal["interleaved", "per_example"] = Field(
        "interleaved", description="interleaved: 2N tokens [x_i, 0], [0, y_i]; per_example: N tokens [x_i, y_{i-1}].")
    noise_levels: list[float] = Field([0.1, 0.5], description="Noise sd σ levels; one is drawn per sequence.")
    noise_probs: list[float] | None = Field(None, description="Probability of each noise level (null: uniform).")

    @field_validator("noise_levels")
    @classmethod
    def _check_noise_levels(cls, v: list[float]) -> list[float]:
        return positive_list("noise_levels", v)  # type: ignore[return-value]

    @model_validator(mode="after")
    def _check_noise_probs(self) -> "RawData":
        p = self.noise_probs
        if p is None:
            return self
        if len(p) != len(self.noise_levels):
            raise ValueError(f"data.noise_probs has {len(p)} entries but data.noise_levels has {len(self.noise_levels)}")
        if any(not math.isfinite(v) or v < 0 for v in p):
            raise ValueError(f"data.noise_probs must be finite and >= 0 (got {p})")
        if abs(sum(p) - 1.0) > 1e-6:
            raise ValueError(f"data.noise_probs must sum to 1 (got {sum(p):g})")
        return self

    @property
    def noise_weights(self) -> list[float]:
        """Probability of each noise level (``noise_probs``, or uniform)."""
        if self.noise_probs is not None:
            return list(self.noise_probs)
        return [1.0 / len(self.noise_levels)] * len(self.noise_levels)

    @property
    def n_features(self) -> int:
        return self.d_d + 1

    @property
    def n_positions(self) -> int:
        return 2 * self.N if self.layout == "interleaved" else self.N

    def scales(self) -> dict[str, float]:
        return {"data.noise_levels": max(self.noise_levels)}


class LinearOrLogisticData(RawData):
    task: str = "linear_or_logistic"
    p_regression: float = Field(0.5, ge=0, le=1, description="Probability a sequence is regression.")
    has_sequence_types: ClassVar[bool] = True  # regression or classification (LinearOrLogisticTask.sequence_types)


@dataclass
class RawBatch(Batch):
    """A batch of raw-data sequences with their ground truth."""

    tokens: Tensor  # [B, T, d+1]: the layout's tokens (T = 2N interleaved, N per example)
    target: Tensor  # [B, N]: y_i, predicted from the i earlier pairs
    x: Tensor  # [B, N, d]
    y: Tensor  # [B, N]
    w: Tensor  # [B, d]
    sigma: Tensor  # [B]: noise sd (0 for classification sequences)
    is_regression: Tensor  # [B] bool


def interleave(x: Tensor, y: Tensor) -> Tensor:
    """``x [B, N, d]``, ``y [B, N]`` → tokens ``[B, 2N, d+1]`` (x-tokens at even positions)."""
    B, N, d = x.shape
    tokens = x.new_zeros(B, N, 2, d + 1)
    tokens[:, :, 0, :d] = x
    tokens[:, :, 1, d] = y
    return tokens.reshape(B, 2 * N, d + 1)


def per_example(x: Tensor, y: Tensor) -> Tensor:
    """``x [B, N, d]``, ``y [B, N]`` → tokens ``[B, N, d+1]``: token i = ``[x_i, y_{i−1}]`` (y_{−1} = 0)."""
    shifted = torch.cat([y.new_zeros(y.shape[0], 1), y[:, :-1]], dim=1)  # [B, N]
    return torch.cat([x, shifted.unsqueeze(-1)], dim=-1)


def _xw(x: Tensor, w: Tensor) -> Tensor:
    """``[B, N]``: xᵢᵀw for ``x [B, N, d]``, ``w [B, d]`` (the labels' noise-free part, before the 1/√d)."""
    return (x @ w.unsqueeze(-1)).squeeze(-1)


TOKENIZERS = {"interleaved": interleave, "per_example": per_example}


class RawTask(TaskFamily):
    """Base class of the raw-data tasks: samples x, w, z, σ and the task type, builds tokens."""

    registered = False
    Data = RawData
    Batch = RawBatch
    analyses = ("sequence",)  # report sections (interpret.report.SECTIONS)

    def __init__(self, data: RawData, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(data, device=device, dtype=dtype)
        self.noise_levels = list(data.noise_levels)
        self.noise_probs = data.noise_weights

    @property
    def layout(self) -> str:  # type: ignore[override]
        return self.data.layout

    @property
    def readout(self) -> slice:  # type: ignore[override]
        return slice(0, None, 2) if self.data.layout == "interleaved" else slice(None)

    @property
    def context_sizes(self) -> list[int]:
        return list(range(self.data.N))

    def curve_positions(self) -> list[int]:
        d, N = self.data.d_d, self.data.N
        return sorted({n for n in (d, 2 * d, N - 1) if n < N})

    def sample_at(self, batch_size: int, generator: torch.Generator, d_eff: int, n_eff: int) -> tuple[RawBatch, RawBatch]:
        """A batch of the reduced problem (dimension ``d_eff``, ``n_eff`` pairs), as the model sees it (x and w
        zero beyond ``d_eff``, the full token width) and as the reduced task's baselines see it."""
        small = self.reduced(d_eff, n_eff).sample(batch_size, generator)
        pad = self.data.d_d - d_eff
        x = torch.nn.functional.pad(small.x, (0, pad))
        w = torch.nn.functional.pad(small.w, (0, pad))
        full = type(small)(**{**small.as_dict(), "x": x, "w": w, "tokens": self.tokens(x, small.y)})
        return full, small

    def reduced(self, d_eff: int, n_eff: int) -> "RawTask":
        """The task at a curriculum point (its baselines score the reduced problem)."""
        return type(self).create(self.data.model_copy(update={"d_d": d_eff, "N": n_eff}), device=self.device, dtype=self.dtype)

    def tokens(self, x: Tensor, y: Tensor) -> Tensor:
        """The layout's tokens for pairs ``x [B, N, d]``, ``y [B, N]``."""
        return TOKENIZERS[self.data.layout](x, y)

    def tokens_for_prediction(self, tensors: dict[str, Tensor]) -> Tensor | None:
        """``tokens``, or the layout's tokens built from pairs ``x [B, N, d]`` and ``y [B, N]``."""
        if "tokens" in tensors:
            return tensors["tokens"]
        x, y = tensors.get("x"), tensors.get("y")
        if x is None or y is None:
            return None
        if x.dim() != 3 or y.shape != x.shape[:2] or not x.is_floating_point() or not y.is_floating_point():
            return None
        return self.tokens(x, y)

    def prediction_input_hint(self) -> str:
        return "; a raw-data run also takes pairs: 'x' [B, N, d] and 'y' [B, N] (floating)"

    def check_tokens(self, tokens: Tensor) -> str | None:
        if self.data.layout == "interleaved" and tokens.shape[1] % 2:
            return f"tokens have {tokens.shape[1]} positions; interleaved (x, y) tokens need an even count"
        return None

    def groups(self, batch: RawBatch) -> dict[str, Tensor]:
        """``[B]`` masks: ``all``, one ``sigma=<σ>`` per noise level (regression sequences), and where the
        batch has classification sequences, ``regression`` (every σ: the task type as a whole) and
        ``classification``."""
        groups = {"all": torch.ones_like(batch.is_regression, dtype=torch.bool)}
        reg = batch.is_regression
        for s in sorted({float(v) for v in batch.sigma[reg].tolist()}):
            groups[f"sigma={s:g}"] = reg & (batch.sigma == torch.tensor(s, dtype=batch.sigma.dtype, device=batch.sigma.device))
        if bool((~reg).any()):
            if bool(reg.any()):
                groups["regression"] = reg.clone()
            groups["classification"] = ~reg
        return groups

    def curve_metrics(self, group: str) -> tuple[str, ...]:
        return ("sign_error",) if group == "classification" else ()

    def paired_batches(self, n: int, generator: torch.Generator) -> PairedBatches | None:
        """Regression sequences that differ only in σ (lowest vs highest level): same x, w and z."""
        if len(self.noise_levels) < 2:
            return None
        B, N, d = n, self.data.N, self.data.d_d
        kw = {"device": self.device, "dtype": self.dtype}
        x = torch.randn(B, N, d, generator=generator, **kw)
        w = torch.randn(B, d, generator=generator, **kw)
        z = torch.randn(B, N, generator=generator, **kw)
        reg = torch.ones(B, dtype=torch.bool, device=self.device)
        lo, hi = min(self.noise_levels), max(self.noise_levels)
        return PairedBatches(self.build(x, w, z, torch.full((B,), lo, **kw), reg),
                             self.build(x, w, z, torch.full((B,), hi, **kw), reg), "σ", lo, hi)

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

    def build(self, x: Tensor, w: Tensor, z: Tensor, sigma: Tensor, is_regression: Tensor) -> RawBatch:
        """Labels and tokens from given ground truth (e.g. the same x, w, z under another σ).

        Regression sequences: y = xᵀw/√d + σz; classification sequences: y = sign(xᵀw)
        (+1 at 0) and σ is recorded as 0.
        """
        d = x.shape[-1]
        clean = _xw(x, w)
        regression = clean / math.sqrt(d) + sigma.unsqueeze(-1) * z
        sign = torch.where(clean >= 0, 1.0, -1.0).to(x.dtype)
        y = torch.where(is_regression.unsqueeze(-1), regression, sign)
        sigma = torch.where(is_regression, sigma, torch.zeros_like(sigma))
        return RawBatch(tokens=self.tokens(x, y), target=y.clone(), x=x, y=y, w=w, sigma=sigma,
                        is_regression=is_regression.clone())

    def conditional_mean(self, batch: RawBatch) -> Tensor | None:
        """``[B, N]``: E[y_i | x_i, w] — xᵢᵀw/√d for regression sequences (the noise σz removed), the label
        itself for classification ones (y = sign(xᵀw) has no noise). d is the batch's own width, so a reduced
        curriculum batch gives its own problem's mean. None for a subclass that makes its own labels (its own
        ``build``) without saying their mean: training refuses the option for it."""
        if type(self).build is not RawTask.build:
            return None
        clean = _xw(batch.x, batch.w) / math.sqrt(batch.x.shape[-1])
        return torch.where(batch.is_regression.unsqueeze(-1), clean, batch.y)


class MixedNoiseRegressionTask(RawTask):
    """Linear regression whose noise level σ is drawn per sequence (Bai et al.'s noisy-ridge mixture)."""

    name = "mixed_noise_regression"
    Data = RawData


class LinearOrLogisticTask(RawTask):
    """Per sequence, noisy linear regression (probability ``p_regression``) or y = sign(xᵀw)."""

    name = "linear_or_logistic"
    Data = LinearOrLogisticData
    n_sequence_types = 2

    def sequence_types(self, batch: RawBatch) -> Tensor:
        """``[B]``: 0 for regression, 1 for classification. The prefix reveals the type from the first label on
        (a regression label is ±1 with probability 0), and before any label both types' mean is 0 (w's sign is
        symmetric), so per-type weights keep every position's minimiser."""
        return (~batch.is_regression).long()

    def sample_is_regression(self, batch_size: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(batch_size, generator=generator, device=self.device, dtype=torch.float64)
        return u < self.data.p_regression


