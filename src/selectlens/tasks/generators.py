"""In-context model-selection task generators (DESIGN §1.1–1.2).

Each sequence draws a latent noise level α, a weight vector w, N training and
N test inputs. K candidate models (one per candidate regularisation) are
fitted on the training points; token j holds every candidate's prediction at
test input j followed by the test label, with the last label masked to 0. The
target is that last label.

All randomness comes from the ``torch.Generator`` passed in, never the global
RNG, so a seed and a device fix the data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch
from torch import Tensor

from selectlens.config import Config, DataConfig
from selectlens.tasks.fitting import logistic_probabilities, ridge_predictions
from selectlens.tasks.raw import RAW_TASKS, RawTask

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class TaskBatch:
    """A batch of sequences with their ground truth."""

    tokens: Tensor  # [B, N, K+1]: candidate predictions, then y (last y masked to 0)
    target: Tensor  # [B]: the masked last y
    alpha: Tensor  # [B]: latent noise level
    x_train: Tensor  # [B, N, d]
    y_train: Tensor  # [B, N]
    x_test: Tensor  # [B, N, d]
    y_test: Tensor  # [B, N]
    w: Tensor  # [B, d]

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device: torch.device | str) -> "TaskBatch":
        return TaskBatch(**{k: v.to(device) for k, v in self.as_dict().items()})

    def __getitem__(self, index: slice | Tensor) -> "TaskBatch":
        return TaskBatch(**{k: v[index] for k, v in self.as_dict().items()})

    def __len__(self) -> int:
        return self.tokens.shape[0]


def balanced_alphas(alphas: list[float], batch_size: int, generator: torch.Generator, *, device, dtype) -> Tensor:
    """``[B]`` noise levels, each of ``alphas`` used ⌊B/|A|⌋ or ⌈B/|A|⌉ times, in random order."""
    table = torch.tensor(alphas, dtype=dtype, device=device)
    order = torch.randperm(batch_size, generator=generator, device=device)
    return table[order % len(alphas)]


class Task:
    """Base class: samples the ground truth, fits candidates, builds tokens."""

    name: ClassVar[str]
    loss: ClassVar[str]  # "mse" or "bce"

    def __init__(self, data: DataConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.data = data
        self.device = torch.device(device)
        self.dtype = dtype
        self.candidates = data.candidates

    @property
    def n_candidates(self) -> int:
        return len(self.candidates)

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


class RegressionTask(Task):
    """Linear regression with noise std ``noise_scale·α``; candidates are ridge fits."""

    name = "regression"
    loss = "mse"

    def labels(self, x: Tensor, w: Tensor, alpha: Tensor, generator: torch.Generator) -> Tensor:
        clean = (x @ w.unsqueeze(-1)).squeeze(-1)  # [B, n]
        noise = torch.randn(clean.shape, generator=generator, device=x.device, dtype=x.dtype)
        return clean + noise * (self.data.noise_scale * alpha).unsqueeze(-1)

    def candidate_predictions(self, x_train: Tensor, y_train: Tensor, x_test: Tensor) -> Tensor:
        return ridge_predictions(x_train, y_train, x_test, self.candidates)


class ClassificationTask(Task):
    """Labels ~ Bernoulli(σ(data_gen_factor·α·xᵀw)); candidates are L2 logistic fits."""

    name = "classification"
    loss = "bce"

    def labels(self, x: Tensor, w: Tensor, alpha: Tensor, generator: torch.Generator) -> Tensor:
        logits = (x @ w.unsqueeze(-1)).squeeze(-1) * (self.data.data_gen_factor * alpha).unsqueeze(-1)
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)

    def candidate_predictions(self, x_train: Tensor, y_train: Tensor, x_test: Tensor) -> Tensor:
        return logistic_probabilities(x_train, y_train, x_test, self.candidates)


TASKS: dict[str, type[Task] | type[RawTask]] = {
    "regression": RegressionTask, "classification": ClassificationTask, **RAW_TASKS,
}


def make_task(config: Config, device: torch.device | str | None = None) -> Task | RawTask:
    """The task a config describes, on ``device`` (default: the config's): a selection task
    (:class:`Task`) or a raw-data one (:class:`~selectlens.tasks.raw.RawTask`)."""
    cls = TASKS[config.data.task_name]
    return cls(config.data, device=device if device is not None else config.device, dtype=DTYPES[config.dtype])


# Independent random streams derived from a config's seed.
DATA_STREAM, SHUFFLE_STREAM, INIT_STREAM, TEMPERATURE_STREAM, EVAL_STREAM = 0, 1, 2, 3, 101
STACKING_STREAM = 4  # training-distribution data for the stacking penalties and the best-honest choice


def stream_seed(seed: int, stream: int) -> int:
    """The seed of random stream ``stream`` for a run seeded ``seed`` (data, shuffling, init, eval, …)."""
    return (seed * 1_000_003 + 7_919 * (stream + 1)) % (2**63 - 1)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded ``torch.Generator`` on ``device``."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))
