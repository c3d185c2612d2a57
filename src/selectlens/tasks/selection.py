"""In-context model-selection task generators (docs/design.md#selection-tasks).

Each sequence draws a latent noise level α, a weight vector w, N training and
N test inputs. K candidate models (one per candidate regularisation) are
fitted on the training points; token j holds every candidate's prediction at
test input j followed by the test label, with the last label masked to 0. The
target is that last label.

All randomness comes from the ``torch.Generator`` passed in, never the global
RNG, so a seed and a device fix the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import Field, field_validator
from torch import Tensor

from selectlens.config import DataConfig, positive_list
from selectlens.tasks.fitting import logistic_probabilities, ridge_predictions
from selectlens.tasks.protocol import Batch, PairedBatches, TaskFamily


class SelectionLayoutData(DataConfig):
    """A ``data`` section whose tokens are the selection layout's: one token per test point, the K candidates'
    predictions and the label (width K + 1, N tokens). Subclasses say what the candidates are."""

    @property
    def candidates(self) -> list[float]:
        raise NotImplementedError

    @property
    def n_features(self) -> int:
        return len(self.candidates) + 1

    @property
    def n_positions(self) -> int:
        return self.N


class SelectionData(SelectionLayoutData):
    """``data`` keys of the selection tasks (the original project's keys, unchanged)."""

    train_samp_per_class: int = Field(10000, gt=0, description="Sequences per epoch, split evenly over data_alphas.")
    data_alphas: list[float] = Field([0.1, 0.8], description="Latent noise levels; one is drawn per sequence.")
    candidate_alphas: list[float] | None = Field(
        None, description="Regularisation of each candidate model; defaults to data_alphas, as in the original."
    )
    classification: bool = Field(False, description="Logistic-regression variant instead of ridge regression.")
    data_gen_factor: float = Field(4.0, gt=0, description="Classification only: logit scale factor.")
    noise_scale: float = Field(0.8, ge=0, description="Regression only: noise std is noise_scale * alpha.")

    @field_validator("data_alphas")
    @classmethod
    def _check_data_alphas(cls, v: list[float]) -> list[float]:
        return positive_list("data_alphas", v)  # type: ignore[return-value]

    @field_validator("candidate_alphas")
    @classmethod
    def _check_candidate_alphas(cls, v: list[float] | None) -> list[float] | None:
        return positive_list("candidate_alphas", v)

    @field_validator("data_gen_factor", "noise_scale")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @property
    def candidates(self) -> list[float]:
        """The candidate regularisations actually used (``candidate_alphas`` or ``data_alphas``)."""
        return list(self.candidate_alphas if self.candidate_alphas is not None else self.data_alphas)

    def scales(self) -> dict[str, float]:
        return {"data.data_alphas": max(self.data_alphas) * max(self.noise_scale, 1.0),
                "data.candidate_alphas": max(self.candidates), "data.data_gen_factor": self.data_gen_factor}

    def check_config(self, config: Any) -> None:
        if config.training.loss == "bce" and not self.classification:
            raise ValueError("training.loss bce needs data.classification true")
        self.check_training_options(config)


@dataclass
class TaskBatch(Batch):
    """A batch of selection sequences with their ground truth."""

    tokens: Tensor  # [B, N, K+1]: candidate predictions, then y (last y masked to 0)
    target: Tensor  # [B]: the masked last y
    alpha: Tensor  # [B]: latent noise level
    x_train: Tensor  # [B, N, d]
    y_train: Tensor  # [B, N]
    x_test: Tensor  # [B, N, d]
    y_test: Tensor  # [B, N]
    w: Tensor  # [B, d]


def balanced_alphas(alphas: list[float], batch_size: int, generator: torch.Generator, *, device, dtype) -> Tensor:
    """``[B]`` noise levels, each of ``alphas`` used ⌊B/|A|⌋ or ⌈B/|A|⌉ times, in random order."""
    table = torch.tensor(alphas, dtype=dtype, device=device)
    order = torch.randperm(batch_size, generator=generator, device=device)
    return table[order % len(alphas)]


class SelectionTask(TaskFamily):
    """In-context model selection: tokens of K candidates' predictions and the label; ``data.classification``
    picks the regression or the logistic variant (one family, two subclasses)."""

    name = "selection"
    Data = SelectionData
    Batch = TaskBatch
    layout = "selection"
    readout = slice(-1, None)  # the last token: P = 1
    analyses = ("selection",)  # report sections (interpret.report.SECTIONS)
    label: ClassVar[str] = "selection"
    has_original_pipeline = True

    @classmethod
    def create(cls, data: SelectionData, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "SelectionTask":
        sub = ClassificationTask if data.classification else RegressionTask
        return sub(data, device=device, dtype=dtype)

    def __init__(self, data: SelectionData, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(data, device=device, dtype=dtype)
        self.candidates = data.candidates

    @property
    def n_candidates(self) -> int:
        return len(self.candidates)

    @property
    def candidate_labels(self) -> list[str]:
        """How the candidates are named in tables (``candidate[<label>]``): their penalties."""
        return [f"{c:g}" for c in self.candidates]

    @property
    def context_sizes(self) -> list[int]:
        return [self.data.N - 1]  # the N−1 visible labels (and the N training pairs inside the candidates)

    def labels(self, x: Tensor, w: Tensor, alpha: Tensor, generator: torch.Generator) -> Tensor:
        """``[B, n]`` labels for inputs ``x [B, n, d]``."""
        raise NotImplementedError

    def candidate_predictions(self, x_train: Tensor, y_train: Tensor, x_test: Tensor) -> Tensor:
        """``[B, m, K]`` predictions of every candidate at ``x_test``."""
        raise NotImplementedError

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        """Draw ``batch_size`` sequences (α balanced, order shuffled)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        B, N, d = batch_size, self.data.N, self.data.d_d
        kw = {"device": self.device, "dtype": self.dtype}
        alpha = balanced_alphas(self.data.data_alphas, B, generator, **kw)
        x_train = torch.randn(B, N, d, generator=generator, **kw)
        x_test = torch.randn(B, N, d, generator=generator, **kw)
        w = torch.randn(B, d, generator=generator, **kw)
        y_train = self.labels(x_train, w, alpha, generator)
        y_test = self.labels(x_test, w, alpha, generator)
        return self.build(alpha, x_train, y_train, x_test, y_test, w)

    def build(self, alpha: Tensor, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, w: Tensor) -> TaskBatch:
        """Fit the candidates on given ground truth and assemble tokens."""
        preds = self.candidate_predictions(x_train, y_train, x_test)  # [B, N, K]
        tokens = torch.cat([preds, y_test.unsqueeze(-1)], dim=-1)  # [B, N, K+1]
        tokens[:, -1, -1] = 0.0
        return TaskBatch(
            tokens=tokens, target=y_test[:, -1].clone(), alpha=alpha,
            x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, w=w,
        )

    def groups(self, batch: TaskBatch) -> dict[str, Tensor]:
        """``all`` and one group per noise level α."""
        out = {"all": torch.ones(len(batch), dtype=torch.bool, device=batch.alpha.device)}
        for a in sorted({float(v) for v in batch.alpha.tolist()}):
            out[f"alpha={a:g}"] = batch.alpha == torch.tensor(a, dtype=batch.alpha.dtype, device=batch.alpha.device)
        return out

    def workspace_bytes(self) -> int:
        K, d = self.n_candidates, self.data.d_d
        return K * d * d * torch.empty((), dtype=self.dtype).element_size()  # the per-candidate ridge systems

    def noisy_labels(self, clean: Tensor, draws: Tensor, alpha: float) -> Tensor:
        """Labels from ``clean = xᵀw`` and fixed random ``draws`` (the same draws under every α)."""
        raise NotImplementedError

    def paired_batches(self, n: int, generator: torch.Generator) -> PairedBatches:
        """Two batches that differ only in α (the lowest and the highest level): same w, same x,
        same noise draws (regression: the same standard-normal noise scaled by each α;
        classification: the same uniforms thresholded)."""
        kw = {"device": self.device, "dtype": self.dtype}
        N, d = self.data.N, self.data.d_d
        x_train = torch.randn(n, N, d, generator=generator, **kw)
        x_test = torch.randn(n, N, d, generator=generator, **kw)
        w = torch.randn(n, d, generator=generator, **kw)
        draws = self.draw_noise(2, n, N, generator=generator)

        def build(alpha: float) -> TaskBatch:
            ys = [self.noisy_labels((x @ w.unsqueeze(-1)).squeeze(-1), u, alpha) for x, u in ((x_train, draws[0]), (x_test, draws[1]))]
            return self.build(torch.full((n,), alpha, **kw), x_train, ys[0], x_test, ys[1], w)

        lo, hi = min(self.data.data_alphas), max(self.data.data_alphas)
        return PairedBatches(build(lo), build(hi), "α", lo, hi)

    def draw_noise(self, *shape: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


class RegressionTask(SelectionTask):
    """Linear regression with noise std ``noise_scale·α``; candidates are ridge fits."""

    registered = False
    label = "regression"

    def labels(self, x: Tensor, w: Tensor, alpha: Tensor, generator: torch.Generator) -> Tensor:
        clean = (x @ w.unsqueeze(-1)).squeeze(-1)  # [B, n]
        noise = torch.randn(clean.shape, generator=generator, device=x.device, dtype=x.dtype)
        return clean + noise * (self.data.noise_scale * alpha).unsqueeze(-1)

    def candidate_predictions(self, x_train: Tensor, y_train: Tensor, x_test: Tensor) -> Tensor:
        return ridge_predictions(x_train, y_train, x_test, self.candidates)

    def draw_noise(self, *shape: int, generator: torch.Generator) -> Tensor:
        return torch.randn(*shape, generator=generator, device=self.device, dtype=self.dtype)

    def noisy_labels(self, clean: Tensor, draws: Tensor, alpha: float) -> Tensor:
        return clean + draws * self.data.noise_scale * alpha


class ClassificationTask(SelectionTask):
    """Labels ~ Bernoulli(σ(data_gen_factor·α·xᵀw)); candidates are L2 logistic fits."""

    registered = False
    label = "classification"
    loss = "bce"
    metrics = ("mse", "bce")  # the Brier score (squared error of the probability) and the log-loss

    def labels(self, x: Tensor, w: Tensor, alpha: Tensor, generator: torch.Generator) -> Tensor:
        logits = (x @ w.unsqueeze(-1)).squeeze(-1) * (self.data.data_gen_factor * alpha).unsqueeze(-1)
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)

    def candidate_predictions(self, x_train: Tensor, y_train: Tensor, x_test: Tensor) -> Tensor:
        return logistic_probabilities(x_train, y_train, x_test, self.candidates)

    def draw_noise(self, *shape: int, generator: torch.Generator) -> Tensor:
        return torch.rand(*shape, generator=generator, device=self.device, dtype=self.dtype)

    def noisy_labels(self, clean: Tensor, draws: Tensor, alpha: float) -> Tensor:
        return (draws < torch.sigmoid(self.data.data_gen_factor * alpha * clean)).to(clean.dtype)
