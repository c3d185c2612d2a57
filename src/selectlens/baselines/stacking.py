"""Context stacking: per sequence, regress the N−1 visible labels on the candidates' predictions and
predict the last token (docs/design.md#context-stacking). An honest baseline — it sees only the tokens.

Regression: ridge, ``b = b₀ + (F_cᵀF_c + λI)⁻¹F_cᵀ(y_c − F_c b₀)``, prediction ``ȳ + (f_q − F̄)·b``, where
``F_c, y_c`` are the visible rows centred (with an unpenalised intercept) or not (without), and the
prior ``b₀`` is 0 or the plain average ``1/K``. The candidates are nearly collinear (they are ridge
fits of the same data), so ordinary least squares has heavy-tailed errors; the ridge penalty λ shrinks
the weights towards ``b₀`` along the ill-determined directions.

Classification: L2 logistic regression (unpenalised intercept) of the visible labels on the candidates'
logits, ``C = 1/λ``.

The noise level is identifiable from the context, so the penalty depends on an *estimated* level
(:class:`LevelEstimator`: thresholds on the least-regularised candidate's mean visible loss). The
thresholds, one penalty per estimated level, the intercept and the prior are fitted on
training-distribution data from their own seed stream, never on the held-out set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from selectlens.baselines.common import Predictor, candidate_predictions, context_errors, pointwise_loss, visible
from selectlens.tasks.fitting import logistic_fit
from selectlens.tasks.selection import TaskBatch

RIDGE_LOG10_GRID = (-6.0, 3.0, 91)
LOGISTIC_LOG10_GRID = (-3.0, 3.0, 13)
_PROB_EPS = 1e-6


@dataclass
class LevelEstimator:
    """The noise level estimated from the context: the mean visible loss (``metric``) of candidate
    ``candidate`` (the least regularised one), cut at ``thresholds`` (ascending) into groups; group g is
    mostly level ``levels[g]``. ``accuracy``: how often the group's level is the true one on the fitting data."""

    candidate: int
    metric: str
    thresholds: list[float]
    levels: list[float]
    accuracy: float

    def statistic(self, batch: TaskBatch) -> Tensor:
        return context_errors(batch, self.metric)[:, self.candidate].double()

    def groups(self, batch: TaskBatch) -> Tensor:
        """``[B]`` long: the estimated level's group index."""
        cuts = torch.tensor(self.thresholds, dtype=torch.float64, device=batch.tokens.device)
        return torch.bucketize(self.statistic(batch).contiguous(), cuts)


def _best_threshold(low: Tensor, high: Tensor) -> float:
    """The cut maximising accuracy when values ≤ cut are called ``low`` and values above it ``high``."""
    values = torch.cat([low, high])
    is_low = torch.cat([torch.ones_like(low), torch.zeros_like(high)])
    order = values.argsort()
    v, lab = values[order], is_low[order]
    correct = lab.cumsum(0) + (1 - lab).flip(0).cumsum(0).flip(0).roll(-1)  # cut after position i
    correct[-1] = lab.sum()
    i = int(correct.argmax())
    return float((v[i] + v[min(i + 1, len(v) - 1)]) / 2)


def fit_level_estimator(batch: TaskBatch, metric: str, candidate: int) -> LevelEstimator:
    """Thresholds on candidate ``candidate``'s mean visible loss that best separate adjacent levels
    (ordered by their median loss) on training data ``batch`` (uses its latent α, as a label to fit to)."""
    stat = context_errors(batch, metric)[:, candidate].double()
    alphas = batch.alpha.double()
    levels = sorted({float(a) for a in alphas.tolist()}, key=lambda a: float(stat[alphas == a].median()))
    cuts = [_best_threshold(stat[alphas == a], stat[alphas == b]) for a, b in zip(levels, levels[1:])]
    cuts = sorted(cuts)
    est = LevelEstimator(candidate, metric, cuts, levels, 0.0)
    table = torch.tensor(levels, dtype=torch.float64, device=alphas.device)
    est.accuracy = float((table[est.groups(batch)] == alphas).double().mean())
    return est


def ridge_stacking_predictions(batch: TaskBatch, lams: Tensor, *, intercept: bool, prior: str) -> Tensor:
    """``[G, B]`` ridge-stacking predictions for every penalty in ``lams [G]`` (float64), all at once
    through one eigendecomposition of ``F_cᵀF_c`` per sequence."""
    F, y = (t.double() for t in visible(batch))  # [B, n, K], [B, n]
    fq = candidate_predictions(batch).double()  # [B, K]
    K = F.shape[-1]
    if intercept:
        F_mean, y_mean = F.mean(1, keepdim=True), y.mean(1, keepdim=True)
        F, y, fq = F - F_mean, y - y_mean, fq - F_mean.squeeze(1)
        base = y_mean.squeeze(1)
    else:
        base = torch.zeros_like(y[:, 0])
    b0 = torch.full((K,), 1.0 / K if prior == "average" else 0.0, dtype=F.dtype, device=F.device)
    resid = y - F @ b0  # [B, n]
    evals, Q = torch.linalg.eigh(F.mT @ F)  # [B, K], [B, K, K]
    z = (Q.mT @ (F.mT @ resid.unsqueeze(-1))).squeeze(-1)  # [B, K]
    u = (Q.mT @ fq.unsqueeze(-1)).squeeze(-1)  # [B, K]
    shrunk = (u * z).unsqueeze(0) / (evals.unsqueeze(0) + lams.double().to(F.device).view(-1, 1, 1))  # [G, B, K]
    return base + fq @ b0 + shrunk.sum(-1)


def logistic_stacking_predictions(batch: TaskBatch, lams: Tensor) -> Tensor:
    """``[G, B]`` probabilities from L2 logistic regression (``C = 1/λ``, unpenalised intercept) of the
    visible labels on the candidates' logits, for every penalty in ``lams [G]``."""
    F, y = visible(batch)
    logit = lambda p: torch.logit(p.double().clamp(_PROB_EPS, 1 - _PROB_EPS))  # noqa: E731
    theta = logistic_fit(logit(F), y.double(), (1.0 / lams.double()).tolist())  # [B, G, K+1]
    z = (theta[..., :-1] * logit(candidate_predictions(batch)).unsqueeze(1)).sum(-1) + theta[..., -1]  # [B, G]
    return torch.sigmoid(z).mT.clamp(_PROB_EPS, 1 - _PROB_EPS)


@dataclass
class StackingFit:
    """A fitted context-stacking baseline (all of it chosen on training data)."""

    kind: str  # "ridge" or "logistic"
    intercept: bool
    prior: str  # ridge: "zero" or "average" (the weights the penalty shrinks towards)
    penalties: list[float]  # one per estimated level group
    estimator: LevelEstimator
    train_loss: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StackingFit":
        return cls(**{**d, "estimator": LevelEstimator(**d["estimator"])})


def _predictions(batch: TaskBatch, kind: str, lams: Tensor, intercept: bool, prior: str) -> Tensor:
    if kind == "ridge":
        return ridge_stacking_predictions(batch, lams, intercept=intercept, prior=prior)
    return logistic_stacking_predictions(batch, lams)


def _per_group_best(losses: Tensor, groups: Tensor, n_groups: int) -> tuple[Tensor, float]:
    """For losses ``[G, B]`` over a penalty grid: the best grid index per group ``[n_groups]`` and the mean loss."""
    best = torch.zeros(n_groups, dtype=torch.long)
    total = 0.0
    for g in range(n_groups):
        m = groups == g
        if not bool(m.any()):
            continue
        per = losses[:, m].mean(1)
        best[g] = per.argmin()
        total += float(per.min()) * int(m.sum())
    return best, total / losses.shape[1]


def fit_context_stacking(batch: TaskBatch, metric: str, *, classification: bool, candidates: list[float]) -> StackingFit:
    """Fit the level estimator, the per-level penalties and (ridge) the intercept/prior variant on
    training data ``batch``, each chosen by ``metric`` (``mse`` or ``bce``)."""
    kind = "logistic" if classification else "ridge"
    least_regularised = max(range(len(candidates)), key=lambda k: candidates[k] if classification else -candidates[k])
    est = fit_level_estimator(batch, metric, least_regularised)
    groups = est.groups(batch).cpu()
    lo, hi, n = LOGISTIC_LOG10_GRID if classification else RIDGE_LOG10_GRID
    log_grid = torch.linspace(lo, hi, n, dtype=torch.float64)
    variants = [(True, "zero")] if classification else [(i, p) for i in (False, True) for p in ("zero", "average")]
    target = batch.target.double().cpu()
    best: StackingFit | None = None
    for intercept, prior in variants:
        losses = pointwise_loss(_predictions(batch, kind, 10.0**log_grid, intercept, prior).cpu(), target, metric)
        idx, _ = _per_group_best(losses, groups, len(est.levels))
        lams = 10.0 ** log_grid[idx]
        if kind == "ridge":  # refine each group's penalty on a 41-point grid ±1 step around its best
            step = (hi - lo) / (n - 1)
            fine = (log_grid[idx].unsqueeze(1) + torch.linspace(-step, step, 41, dtype=torch.float64)).flatten()
            f_losses = pointwise_loss(_predictions(batch, kind, 10.0**fine, intercept, prior).cpu(), target, metric)
            f_losses = f_losses.view(len(est.levels), 41, -1)
            lams = torch.stack([10.0 ** fine.view(len(est.levels), 41)[g, f_losses[g][:, groups == g].mean(1).argmin()]
                                if bool((groups == g).any()) else lams[g] for g in range(len(est.levels))])
        fit = StackingFit(kind, intercept, prior, [float(v) for v in lams], est, 0.0)
        fit.train_loss = float(pointwise_loss(context_stacking(fit)(batch).double().cpu(), target, metric).mean())
        if best is None or fit.train_loss < best.train_loss:
            best = fit
    assert best is not None
    return best


def context_stacking(fit: StackingFit) -> Predictor:
    """HONEST: stacking of the candidates on the visible tokens, with the penalty of the estimated level."""

    def predict(batch: TaskBatch) -> Tensor:
        lams = torch.tensor(fit.penalties, dtype=torch.float64)
        preds = _predictions(batch, fit.kind, lams, fit.intercept, fit.prior)  # [L, B]
        groups = fit.estimator.groups(batch)
        return preds.gather(0, groups.unsqueeze(0)).squeeze(0).to(batch.tokens.dtype)

    return predict
