"""Baselines for the selection layout, with the model's call signature.

Every predictor is ``predict(batch: TaskBatch) -> Tensor [B]``: a prediction
for the masked last label, in target space (a probability for
classification). The trainer logs them every epoch and the evaluator tables
them, so they live here, below both (``train`` and ``evaluate`` never import
each other).

Each predictor says what it sees (:func:`baseline_sees`):

* ``honest`` — only what the transformer sees: the candidates' predictions and the N−1 visible labels;
* ``latent`` — also the latent α (and, for the Bayes-matched ridge, x);
* ``oracle`` — the answer itself (named ``oracle_*``);
* ``bound`` — a reference no predictor of the tokens can beat in expectation (not a competitor).

Everything a baseline fits (softmax temperatures, stacking penalties, the level
thresholds, which honest baseline is best) is fitted on training-distribution
data from its own seed streams, by the metric being reported
(:func:`fit_selection_baselines`), never on the held-out set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from selectlens.baselines.bayes import bayes_full_information, bayes_matched_ridge, noise_floor_losses
from selectlens.baselines.common import (
    Predictor, candidate_predictions, context_errors, fit_log_grid, pick, pointwise_loss, visible,
)
from selectlens.baselines.stacking import StackingFit, context_stacking, fit_context_stacking
from selectlens.baselines.suite import BaselineSuite, register_suite, suite_for
from selectlens.tasks.protocol import STACKING_STREAM, TEMPERATURE_STREAM, make_generator, stream_seed
from selectlens.tasks.selection import ClassificationTask, RegressionTask, SelectionTask, TaskBatch

__all__ = [
    "SEES", "SELECTION_BASELINE_SEES", "Predictor", "SelectionFit", "StackingFit", "baseline_sees",
    "bayes_full_information", "bayes_matched_ridge", "candidate", "candidate_average", "candidate_predictions",
    "context_errors", "context_softmax_ensemble", "context_stacking", "context_validation_select",
    "fit_context_stacking", "fit_selection_baselines", "fit_softmax_temperature",
    "noise_floor_losses", "oracle_select", "oracle_softmax_ensemble", "oracle_softmax_ensemble_original",
    "pointwise_loss", "training_temperature", "true_alpha_candidate", "visible",
]

SEES = ("honest", "latent", "oracle", "bound")
SELECTION_BASELINE_SEES: dict[str, str] = {
    "candidate_average": "honest",
    "context_validation_select": "honest",
    "context_softmax_ensemble": "honest",
    "context_stacking": "honest",
    "true_alpha_candidate": "latent",
    "bayes_matched_ridge": "latent",
    "oracle_select": "oracle",
    "oracle_softmax_ensemble": "oracle",
    "oracle_softmax_ensemble_original": "oracle",
    "bayes_full_information": "bound",
    "noise_floor": "bound",
}


def baseline_sees(name: str) -> str:
    """What a selection predictor ``name`` sees: ``honest``, ``latent``, ``oracle`` or ``bound`` (``model`` is honest)."""
    if name == "model" or name.startswith("candidate["):
        return "honest"
    if name.startswith("oracle_"):
        return "oracle"
    return SELECTION_BASELINE_SEES[name]


def candidate(k: int) -> Predictor:
    return lambda batch: candidate_predictions(batch)[:, k]


def candidate_average(batch: TaskBatch) -> Tensor:
    return candidate_predictions(batch).mean(dim=1)


def context_validation_select(kind: str) -> Predictor:
    """The candidate with the lowest mean loss (``kind``) on the visible tokens."""
    return lambda batch: pick(candidate_predictions(batch), context_errors(batch, kind).argmin(dim=1))


def context_softmax_ensemble(kind: str, temperature: float) -> Predictor:
    """Candidates weighted by ``softmax(−context_error / temperature)``."""

    def predict(batch: TaskBatch) -> Tensor:
        weights = torch.softmax(-context_errors(batch, kind) / temperature, dim=1)
        return (weights * candidate_predictions(batch)).sum(dim=1)

    return predict


def true_alpha_candidate(candidates: list[float]) -> Predictor:
    """LATENT: the candidate whose regularisation is closest (in log scale) to the sequence's latent α."""
    logs = torch.tensor([math.log(c) for c in candidates])

    def predict(batch: TaskBatch) -> Tensor:
        dist = (batch.alpha.log().unsqueeze(1) - logs.to(batch.alpha).unsqueeze(0)).abs()
        return pick(candidate_predictions(batch), dist.argmin(dim=1))

    return predict


def oracle_select(kind: str) -> Predictor:
    """ORACLE: the candidate closest to the target, scored with ``kind``."""

    def predict(batch: TaskBatch) -> Tensor:
        preds = candidate_predictions(batch)
        return pick(preds, pointwise_loss(preds, batch.target.unsqueeze(1), kind).argmin(dim=1))

    return predict


def oracle_softmax_ensemble(kind: str, temperature: float) -> Predictor:
    """ORACLE: candidates weighted by ``softmax(−loss(ŷ_k, target) / temperature)``."""

    def predict(batch: TaskBatch) -> Tensor:
        preds = candidate_predictions(batch)
        weights = torch.softmax(-pointwise_loss(preds, batch.target.unsqueeze(1), kind) / temperature, dim=1)
        return (weights * preds).sum(dim=1)

    return predict


def oracle_softmax_ensemble_original(batch: TaskBatch) -> Tensor:
    """ORACLE: ``softmax(−(ŷ_k − target)²)`` at temperature 1, as in the original (nearly a plain average
    when squared errors are far below 1)."""
    return oracle_softmax_ensemble("mse", 1.0)(batch)


def _fit_temperature(batch: TaskBatch, kind: str, scores: Tensor) -> float:
    """The temperature T minimising the loss (``kind``) of ``softmax(−scores/T)``-weighted candidates on ``batch``."""
    scores, preds, target = scores.double(), candidate_predictions(batch).double(), batch.target.double()

    def loss(log_t: Tensor) -> Tensor:  # [G] -> [G]
        w = torch.softmax(-scores.unsqueeze(0) / (10.0 ** log_t).view(-1, 1, 1), dim=2)
        return pointwise_loss((w * preds.unsqueeze(0)).sum(-1), target.unsqueeze(0), kind).mean(dim=1)

    return fit_log_grid(loss, -4.0, 3.0, 71, scores.device)


def fit_softmax_temperature(batch: TaskBatch, kind: str) -> float:
    """The temperature minimising the context-softmax ensemble's loss on ``batch`` (training data):
    a log-spaced grid over 1e-4…1e3 (step 0.1 in log10), refined on a 41-point grid around the best point."""
    return _fit_temperature(batch, kind, context_errors(batch, kind))


def fit_oracle_temperature(batch: TaskBatch, kind: str) -> float:
    """The temperature minimising the oracle softmax ensemble's loss on ``batch`` (training data)."""
    return _fit_temperature(batch, kind, pointwise_loss(candidate_predictions(batch), batch.target.unsqueeze(1), kind))


def training_temperature(task: SelectionTask, seed: int, sequences: int) -> float:
    """The context-softmax temperature for a run seeded ``seed``: fitted on ``sequences`` training-distribution
    sequences from their own seed stream, so the trainer and the evaluator get the same value."""
    batch = task.sample(sequences, make_generator(stream_seed(seed, TEMPERATURE_STREAM), task.device))
    return fit_softmax_temperature(batch, task.loss)


@dataclass
class SelectionFit:
    """Everything the selection baselines fit on training data, for one reported metric."""

    metric: str  # "mse" (squared error / Brier) or "bce" (log-loss)
    temperature: float  # context softmax ensemble
    oracle_temperature: float  # oracle softmax ensemble
    stacking: StackingFit | None
    best_honest: str = ""  # the honest baseline with the lowest loss on the fitting data
    train_losses: dict[str, float] | None = None  # every honest baseline's loss on the fitting data

    def as_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["stacking"] = self.stacking.as_dict() if self.stacking else None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SelectionFit":
        return cls(**{**d, "stacking": StackingFit.from_dict(d["stacking"]) if d.get("stacking") else None})


def fit_selection_baselines(task: SelectionTask, seed: int, sequences: int, metric: str | None = None) -> SelectionFit:
    """Fit every baseline's free parameters for a run seeded ``seed`` by ``metric`` (see :meth:`SelectionSuite.fit`)."""
    return suite_for(task).fit(seed, sequences, metric)


@register_suite(SelectionTask)
class SelectionSuite(BaselineSuite):
    """Baselines of any selection-layout task: one per candidate, their average, context validation,
    the context-softmax ensemble, context stacking (honest); the oracles. Subclasses add their latent
    predictors and bounds (:meth:`references`)."""

    SEES = {"candidate[": "honest", "oracle_": "oracle", **SELECTION_BASELINE_SEES}

    def sees(self, name: str) -> str:
        return "oracle" if name.startswith("oracle_") else super().sees(name)

    def fit(self, seed: int, sequences: int, metric: str | None = None) -> SelectionFit:
        """Every baseline's free parameters for a run seeded ``seed``, by ``metric`` (default: the task's
        loss): the softmax temperatures on the temperature stream, the stacking baseline on the stacking
        stream; then the best honest baseline by its loss on the stacking stream's sequences."""
        task = self.task
        metric = metric or task.loss
        temp_batch = task.sample(sequences, make_generator(stream_seed(seed, TEMPERATURE_STREAM), task.device))
        stack_batch = task.sample(sequences, make_generator(stream_seed(seed, STACKING_STREAM), task.device))
        fit = SelectionFit(
            metric=metric,
            temperature=fit_softmax_temperature(temp_batch, metric),
            oracle_temperature=fit_oracle_temperature(temp_batch, metric),
            stacking=fit_context_stacking(stack_batch, metric, classification=task.loss == "bce", candidates=task.candidates),
        )
        honest = {n: f for n, f in self.predictors(fit).items() if self.sees(n) == "honest"}
        fit.train_losses = {n: float(pointwise_loss(f(stack_batch), stack_batch.target, metric).double().mean())
                            for n, f in honest.items()}
        fit.best_honest = min(fit.train_losses, key=fit.train_losses.get)
        return fit

    def fit_from_checkpoint(self, saved: dict[str, Any], metric: str) -> SelectionFit:
        if saved.get("baseline_fit"):
            return SelectionFit.from_dict(saved["baseline_fit"])
        # checkpoints from before stacking: the context-softmax temperature only
        return SelectionFit(metric, float(saved.get("temperature", 1.0)), 1.0, None)

    def references(self, fit: SelectionFit) -> dict[str, Predictor]:
        """Latent predictors and bounds, between the honest baselines and the oracles."""
        return {"true_alpha_candidate": true_alpha_candidate(self.task.candidates)}

    def predictors(self, fit: SelectionFit | float) -> dict[str, Predictor]:
        """Every baseline, by name, selecting and fitted by ``fit.metric``.

        A bare float is taken as the context-softmax temperature of a fit without stacking (older runs);
        the oracle softmax ensemble then uses the original temperature 1.
        """
        task = self.task
        if not isinstance(fit, SelectionFit):
            fit = SelectionFit(task.loss, float(fit), 1.0, None)
        kind = fit.metric
        out: dict[str, Predictor] = {f"candidate[{c}]": candidate(k) for k, c in enumerate(task.candidate_labels)}
        out.update({
            "candidate_average": candidate_average,
            "context_validation_select": context_validation_select(kind),
            "context_softmax_ensemble": context_softmax_ensemble(kind, fit.temperature),
        })
        if fit.stacking is not None:
            out["context_stacking"] = context_stacking(fit.stacking)
        out.update(self.references(fit))
        out.update({
            "oracle_select": oracle_select(kind),
            "oracle_softmax_ensemble": oracle_softmax_ensemble(kind, fit.oracle_temperature),
            "oracle_softmax_ensemble_original": oracle_softmax_ensemble_original,
        })
        return out

    def describe_fit(self, fit: SelectionFit, metric_name: str) -> str:
        text = (f"Fitted on training data by {metric_name}: context-softmax temperature {fit.temperature:.4g}, "
                f"oracle-softmax temperature {fit.oracle_temperature:.4g}")
        st = fit.stacking
        if st is not None:
            est = st.estimator
            text += (f"; context_stacking: {st.kind}, {'with' if st.intercept else 'no'} intercept, shrunk towards "
                     f"{'the average' if st.prior == 'average' else 'zero'}, penalty per estimated level "
                     + ", ".join(f"α={a:g}: {p:.4g}" for a, p in zip(est.levels, st.penalties))
                     + f" (level estimated by thresholds {', '.join(f'{c:.4g}' for c in est.thresholds)} on candidate "
                     f"{est.candidate}'s mean visible loss; {100 * est.accuracy:.1f}% correct on training data)")
        return text + f". Best honest baseline on training data: {fit.best_honest}."


@register_suite(ClassificationTask)
class ClassificationSuite(SelectionSuite):
    """Classification: no closed-form information bound (the posterior over w given logistic labels has
    none), so the latent true-α candidate and the oracles are the references."""


@register_suite(RegressionTask)
class RegressionSuite(SelectionSuite):
    """Regression adds the Bayes-matched ridge (latent), the full-information Bayes bound and the noise floor."""

    bound = "bayes_full_information"

    def references(self, fit: SelectionFit) -> dict[str, Predictor]:
        data = self.task.data
        return {**super().references(fit),
                "bayes_matched_ridge": bayes_matched_ridge(data.noise_scale),
                "bayes_full_information": bayes_full_information(data.data_alphas, data.noise_scale)}

    def extra_losses(self, batch: TaskBatch, metric: str) -> dict[str, Tensor]:
        return {"noise_floor": noise_floor_losses(batch, self.task.data.noise_scale)}
