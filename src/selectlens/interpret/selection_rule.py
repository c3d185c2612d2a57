"""The model's selection rule, read off its behaviour (no internals).

* **Effective candidate weights.** K = 2: ``a = (p − ŷ₂)/(ŷ₁ − ŷ₂)`` per sequence (1 = candidate 1,
  0 = candidate 2), defined where ``|ŷ₁ − ŷ₂| > threshold`` (default 0.05, about the median candidate
  disagreement on the default task; below it ``a`` is a ratio of tiny differences). K > 2: the
  position of p between the smallest and the largest candidate, ``(p − min ŷ)/(max ŷ − min ŷ)``.
  In both cases the prediction is **outside the candidates' hull** when it is below the smallest or
  above the largest candidate; we report how often, and how far (absolute, and relative to the
  candidates' spread), **among the sequences where ``a`` is defined**: where the candidates nearly
  agree the hull is an interval of width ~0, almost any prediction lies "outside" it and the
  relative distance explodes. The share over all sequences is kept as a labelled secondary number.
* **The selection curve.** ``a`` binned by the difference of the two candidates' context errors
  ``Δ = err₁ − err₂`` (quantile bins, per α, mean with 95% CI), beside the same curve for the
  baselines' predictions: context-validation (a step at Δ = 0), the context softmax ensemble
  (``σ(−Δ/T)`` at its fitted T) and stacking.
* **Agreement.** The mean squared distance between the model's predictions and each baseline's
  (not the target), overall and per α, with 95% CIs; the rule it tracks is the closest honest one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from selectlens.baselines import baseline_sees, candidate_predictions, context_errors
from selectlens.evaluate.metrics import mean_ci, paired_diff_ci
from selectlens.tasks.selection import TaskBatch

CURVE_BASELINES = ("context_validation_select", "context_softmax_ensemble", "context_stacking")


def effective_weight(pred: Tensor, candidates: Tensor, threshold: float = 0.05) -> tuple[Tensor, Tensor]:
    """``(a [B], defined [B] bool)``: the weight on the first candidate (K = 2) or the position between the
    smallest and the largest candidate (K > 2); ``pred [B]``, ``candidates [B, K]``."""
    c = candidates.double()
    p = pred.double()
    if c.shape[1] == 2:
        diff = c[:, 0] - c[:, 1]
        defined = diff.abs() > threshold
        a = (p - c[:, 1]) / torch.where(defined, diff, torch.ones_like(diff))
    else:
        lo, hi = c.min(1).values, c.max(1).values
        defined = (hi - lo) > threshold
        a = (p - lo) / torch.where(defined, hi - lo, torch.ones_like(hi))
    return torch.where(defined, a, torch.full_like(a, float("nan"))), defined


def hull_excursion(pred: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
    """``(distance [B], relative [B])``: how far ``pred`` lies outside ``[min ŷ, max ŷ]`` (0 inside), and that
    distance over the candidates' spread ``max ŷ − min ŷ``."""
    c, p = candidates.double(), pred.double()
    lo, hi = c.min(1).values, c.max(1).values
    dist = (lo - p).clamp(min=0) + (p - hi).clamp(min=0)
    return dist, dist / (hi - lo).clamp(min=1e-12)


def _ci(values: Tensor) -> list[float]:
    return list(mean_ci(values)) if values.numel() else [float("nan")] * 3


def selection_curve(a: dict[str, Tensor], delta: Tensor, mask: Tensor, bins: int = 12) -> dict[str, Any]:
    """Binned ``a`` (mean, CI) against ``delta`` for every predictor in ``a`` on the sequences in ``mask``;
    bins are quantiles of ``delta`` over the sequences where the model's ``a`` is defined."""
    d = delta[mask].double()
    if d.numel() < 2 * bins:
        bins = max(1, d.numel() // 2)
    edges = torch.quantile(d, torch.linspace(0, 1, bins + 1, dtype=torch.float64)) if d.numel() else torch.zeros(2)
    which = torch.bucketize(d.contiguous(), edges[1:-1].contiguous())
    out: dict[str, Any] = {"edges": edges.tolist(), "centers": [], "curves": {n: [] for n in a}}
    for k in range(len(edges) - 1):
        sel = which == k
        out["centers"].append(float(d[sel].median()) if bool(sel.any()) else float("nan"))
        for name, values in a.items():
            v = values[mask][sel]
            out["curves"][name].append(_ci(v[~v.isnan()]))
    return out


@dataclass
class SelectionRule:
    threshold: float
    defined_share: float  # sequences where the effective weight is defined
    # Hull excursions among the sequences where ``a`` is defined (spread > threshold), each (mean, low, high):
    outside_share: list[float]  # share of those sequences whose prediction is outside the candidates' hull
    outside_distance: list[float]  # mean distance outside, among those outside
    outside_relative: list[float]  # that distance over the candidates' spread, among those outside
    weight_summary: dict[str, list[float]]  # mean a (CI) overall and per α, where defined
    curve: dict[str, dict[str, Any]]  # per α: selection_curve(...)
    agreement: dict[str, dict[str, Any]]  # per baseline: {"sees", "all": (m, lo, hi), "per_alpha": {α: ...}}
    closest_honest: str
    closest_any: str
    runner_up: str  # the second-closest honest baseline
    closest_margin: list[float]  # paired (mean, low, high) of distance to runner_up − distance to closest_honest
    temperature: float
    # Secondary, over every sequence (near-agreeing candidates included, where "outside" is nearly free):
    outside_share_all: list[float] = field(default_factory=list)
    outside_distance_all: list[float] = field(default_factory=list)
    outside_relative_all: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def agreement_table(model_pred: Tensor, preds: dict[str, Tensor], alphas: Tensor,
                    sees: Callable[[str], str] = baseline_sees) -> dict[str, dict[str, Any]]:
    """Mean squared distance between the model's predictions and each predictor's, overall and per α."""
    levels = sorted({float(x) for x in alphas.tolist()})
    table = {}
    for name, p in preds.items():
        sq = (p.double() - model_pred.double()).cpu() ** 2
        table[name] = {"sees": sees(name), "all": _ci(sq),
                       "per_alpha": {f"{a:g}": _ci(sq[alphas == a]) for a in levels}}
    return table


def analyze_selection_rule(model_pred: Tensor, batch: TaskBatch, baselines: dict[str, Any], *, kind: str,
                           temperature: float, threshold: float = 0.05, bins: int = 12,
                           sees: Callable[[str], str] = baseline_sees) -> SelectionRule:
    """The model's effective weights, hull excursions, selection curve and agreement with ``baselines``
    (name → predictor, as from :func:`selectlens.baselines.make_baselines`) on ``batch``; ``sees`` says what
    each baseline sees (the task's suite's ``sees``)."""
    cands = candidate_predictions(batch).double().cpu()
    model_pred = model_pred.double().cpu()
    alphas = batch.alpha.cpu()
    preds = {name: fn(batch).double().cpu() for name, fn in baselines.items()}
    a_model, defined = effective_weight(model_pred, cands, threshold)
    dist, rel = hull_excursion(model_pred, cands)
    outside = dist > 0
    outside_defined = outside & defined
    errs = context_errors(batch, kind).double().cpu()
    delta = errs[:, 0] - errs[:, -1]
    a_all = {"model": a_model}
    a_all.update({n: effective_weight(preds[n], cands, threshold)[0] for n in CURVE_BASELINES if n in preds})
    levels = sorted({float(x) for x in alphas.tolist()})
    curve = {f"{a:g}": selection_curve(a_all, delta, defined & (alphas == a), bins) for a in levels}
    weights = {"all": _ci(a_model[defined])}
    weights.update({f"{a:g}": _ci(a_model[defined & (alphas == a)]) for a in levels})
    agreement = agreement_table(model_pred, {n: p for n, p in preds.items() if not n.startswith("oracle_")}, alphas, sees)
    honest = {n: v for n, v in agreement.items() if v["sees"] == "honest"}
    first, second = (sorted(honest, key=lambda n: honest[n]["all"][0]) + [None])[:2]
    margin = [float("nan")] * 3
    if second is not None:
        margin = list(paired_diff_ci((preds[second] - model_pred) ** 2, (preds[first] - model_pred) ** 2))
    return SelectionRule(
        threshold=threshold, defined_share=float(defined.double().mean()),
        outside_share=_ci(outside[defined].double()), outside_distance=_ci(dist[outside_defined]),
        outside_relative=_ci(rel[outside_defined]),
        weight_summary=weights, curve=curve, agreement=agreement,
        closest_honest=first, closest_any=min(agreement, key=lambda n: agreement[n]["all"][0]),
        runner_up=second or "", closest_margin=margin,
        temperature=temperature,
        outside_share_all=_ci(outside.double()), outside_distance_all=_ci(dist[outside]),
        outside_relative_all=_ci(rel[outside]),
    )


def selection_curve_figure(rule: SelectionRule):
    """One panel per α: the model's binned effective weight (with CIs) against Δ context error, with the
    baselines' curves computed the same way on the same sequences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(rule.curve)
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4), squeeze=False)
    styles = {"model": ("black", "-o"), "context_validation_select": ("tab:blue", "--"),
              "context_softmax_ensemble": ("tab:orange", "--"), "context_stacking": ("tab:green", "--")}
    for ax, a in zip(axes[0], levels):
        c = rule.curve[a]
        x = np.array(c["centers"])
        for name, vals in c["curves"].items():
            v = np.array(vals, dtype=float)
            color, style = styles.get(name, ("gray", ":"))
            ax.plot(x, v[:, 0], style, color=color, label=name, ms=3)
            if name == "model":
                ax.fill_between(x, v[:, 1], v[:, 2], color=color, alpha=0.15)
        ax.axvline(0, color="gray", lw=0.5)
        ax.set_xlabel("context error of candidate 1 − candidate 2")
        ax.set_ylabel("effective weight on candidate 1")
        ax.set_title(f"α = {a}")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"Selection curve (sequences with |ŷ₁ − ŷ₂| > {rule.threshold:g})", fontsize=10)
    fig.tight_layout()
    return fig
