"""Baselines for the selection layout, with the model's call signature.

Every predictor is ``predict(batch: TaskBatch) -> Tensor [B]``: a prediction
for the masked last label, in target space (a probability for
classification). The trainer logs them every epoch and the evaluator tables
them, so they live here, below both (``train`` and ``evaluate`` never import
each other).

Honest baselines see only what the transformer sees: the candidates'
predictions and the N−1 visible labels. Oracles look at the answer and are
named ``oracle_*``; the true-α candidate uses the latent label.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from selectlens.tasks.generators import TEMPERATURE_STREAM, Task, TaskBatch, make_generator, stream_seed

Predictor = Callable[[TaskBatch], Tensor]
_EPS = 1e-7


def pointwise_loss(pred: Tensor, target: Tensor, kind: str) -> Tensor:
    """Elementwise loss: ``mse`` → squared error; ``bce`` → log loss of a probability."""
    if kind == "mse":
        return (pred - target) ** 2
    if kind == "bce":
        p = pred.clamp(_EPS, 1 - _EPS)
        return -(target * p.log() + (1 - target) * (1 - p).log())
    raise ValueError(f"unknown loss {kind!r}")


def candidate_predictions(batch: TaskBatch) -> Tensor:
    """``[B, K]`` every candidate's prediction at the last position."""
    return batch.tokens[:, -1, :-1]


def context_errors(batch: TaskBatch, kind: str) -> Tensor:
    """``[B, K]`` each candidate's mean loss on the N−1 visible tokens."""
    preds = batch.tokens[:, :-1, :-1]  # [B, N-1, K]
    labels = batch.tokens[:, :-1, -1:]  # [B, N-1, 1]
    return pointwise_loss(preds, labels, kind).mean(dim=1)


def _pick(values: Tensor, index: Tensor) -> Tensor:
    return values.gather(1, index.unsqueeze(1)).squeeze(1)


def candidate(k: int) -> Predictor:
    return lambda batch: candidate_predictions(batch)[:, k]


def candidate_average(batch: TaskBatch) -> Tensor:
    return candidate_predictions(batch).mean(dim=1)


def context_validation_select(kind: str) -> Predictor:
    """The candidate with the lowest mean loss on the visible tokens."""
    return lambda batch: _pick(candidate_predictions(batch), context_errors(batch, kind).argmin(dim=1))


def context_softmax_ensemble(kind: str, temperature: float) -> Predictor:
    """Candidates weighted by ``softmax(−context_error / temperature)``."""

    def predict(batch: TaskBatch) -> Tensor:
        weights = torch.softmax(-context_errors(batch, kind) / temperature, dim=1)
        return (weights * candidate_predictions(batch)).sum(dim=1)

    return predict


def true_alpha_candidate(candidates: list[float]) -> Predictor:
    """The candidate whose regularisation is closest (in log scale) to the sequence's latent α."""
    logs = torch.tensor([math.log(c) for c in candidates])

    def predict(batch: TaskBatch) -> Tensor:
        dist = (batch.alpha.log().unsqueeze(1) - logs.to(batch.alpha).unsqueeze(0)).abs()
        return _pick(candidate_predictions(batch), dist.argmin(dim=1))

    return predict


def oracle_select(kind: str) -> Predictor:
    """ORACLE: the candidate closest to the target, scored with the task's loss."""

    def predict(batch: TaskBatch) -> Tensor:
        preds = candidate_predictions(batch)
        return _pick(preds, pointwise_loss(preds, batch.target.unsqueeze(1), kind).argmin(dim=1))

    return predict


def oracle_softmax_ensemble(batch: TaskBatch) -> Tensor:
    """ORACLE: candidates weighted by ``softmax(−(ŷ_k − target)²)``, as in the original."""
    preds = candidate_predictions(batch)
    weights = torch.softmax(-((preds - batch.target.unsqueeze(1)) ** 2), dim=1)
    return (weights * preds).sum(dim=1)


def fit_softmax_temperature(batch: TaskBatch, kind: str) -> float:
    """The temperature minimising the context-softmax ensemble's loss on ``batch`` (training data).

    A log-spaced grid over 1e-4…1e3, refined around the best point.
    """
    errors = context_errors(batch, kind).double()
    preds = candidate_predictions(batch).double()
    target = batch.target.double()

    def loss(log_t: Tensor) -> Tensor:  # [G] -> [G]
        w = torch.softmax(-errors.unsqueeze(0) / (10.0 ** log_t).view(-1, 1, 1), dim=2)
        return pointwise_loss((w * preds.unsqueeze(0)).sum(-1), target.unsqueeze(0), kind).mean(dim=1)

    grid = torch.linspace(-4, 3, 71, dtype=torch.float64, device=errors.device)
    best = float(grid[loss(grid).argmin()])
    fine = torch.linspace(best - 0.1, best + 0.1, 41, dtype=torch.float64, device=errors.device)
    return float(10.0 ** fine[loss(fine).argmin()])


def training_temperature(task: Task, seed: int, sequences: int) -> float:
    """The context-softmax temperature for a run seeded ``seed``: fitted on ``sequences`` training-distribution
    sequences from their own seed stream, so the trainer and the evaluator get the same value."""
    batch = task.sample(sequences, make_generator(stream_seed(seed, TEMPERATURE_STREAM), task.device))
    return fit_softmax_temperature(batch, task.loss)


def make_baselines(task: Task, temperature: float) -> dict[str, Predictor]:
    """Every baseline for ``task``, by name; names starting with ``oracle_`` look at the answer."""
    kind = task.loss
    out: dict[str, Predictor] = {f"candidate[{c:g}]": candidate(k) for k, c in enumerate(task.candidates)}
    out.update({
        "candidate_average": candidate_average,
        "context_validation_select": context_validation_select(kind),
        "context_softmax_ensemble": context_softmax_ensemble(kind, temperature),
        "true_alpha_candidate": true_alpha_candidate(task.candidates),
        "oracle_select": oracle_select(kind),
        "oracle_softmax_ensemble": oracle_softmax_ensemble,
    })
    return out
