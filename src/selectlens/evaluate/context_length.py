"""Per-position results: error against the number of in-context examples, per group.

For every read-out position (a number of labelled examples n; one position for the selection
layout), per group of sequences (α, σ, type, pool/fresh…, as the task defines them), the model
and every baseline on the same sequences:

* the error with a 95% CI over sequences (and the task's extra per-group metrics, e.g. the sign
  error ``1[ŷ·y < 0]`` on classification sequences, a prediction of exactly 0 counting ½);
* the paired 95% CI of (model − reference) on the same sequences, the reference being the suite's
  (the best honest baseline, or the exact Bayes mixture where the family has one);
* the excess-risk ratio ``(model − reference)/reference = ā/b̄ − 1`` with a delta-method 95% CI:
  ``se = sd(a_i − (ā/b̄)·b_i) / (√n · b̄)`` over the paired per-sequence errors a (model), b (reference).

:func:`group_curves` computes it from predictions alone; :func:`context_length_figure` draws
error vs n, one panel per group.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from selectlens.evaluate.metrics import Z95

def curve_ci(values: Tensor) -> dict[str, list[float]]:
    """``values [S, N]`` (S sequences) → per position n: mean and its 95% CI ``mean ± 1.96·sd/√S``."""
    v = values.double()
    S = v.shape[0]
    mean = v.mean(0)
    half = Z95 * v.std(0, unbiased=True) / math.sqrt(S) if S >= 2 else torch.full_like(mean, math.nan)
    return {"mean": mean.tolist(), "ci_low": (mean - half).tolist(), "ci_high": (mean + half).tolist()}


def excess_ratio_ci(a: Tensor, b: Tensor) -> dict[str, list[float]]:
    """Per position, ``ā/b̄ − 1`` with its delta-method 95% CI; ``a, b [S, N]`` paired errors."""
    a, b = a.double(), b.double()
    S = a.shape[0]
    abar, bbar = a.mean(0), b.mean(0)
    r = abar / bbar
    if S >= 2:
        half = Z95 * (a - r * b).std(0, unbiased=True) / (math.sqrt(S) * bbar)
    else:
        half = torch.full_like(r, math.nan)
    return {"mean": (r - 1).tolist(), "ci_low": (r - 1 - half).tolist(), "ci_high": (r - 1 + half).tolist()}


def sign_error(pred: Tensor, y: Tensor) -> Tensor:
    """``1[ŷ·y < 0]``, ½ where ŷ = 0 (no decision: a coin flip)."""
    prod = pred.double() * y.double()
    return (prod < 0).double() + 0.5 * (pred == 0).double()


def group_curves(preds: dict[str, Tensor], losses: dict[str, Tensor], batch_groups: dict[str, Tensor],
                 reference: str | None, metric: str, extra: dict[str, tuple[str, ...]], target: Tensor) -> dict[str, Any]:
    """Per group, per predictor: the per-position curve of ``metric`` (``losses[name] [B, P]``), the
    group's extra metrics, the model's ratio to it in each (``model_excess_over``: model/predictor − 1,
    paired delta-method CI), and the model's paired difference and excess ratio to ``reference``."""
    out: dict[str, Any] = {}
    for g, mask in batch_groups.items():
        mask = mask.cpu()
        res: dict[str, Any] = {"sequences": int(mask.sum()), "predictors": {}}
        per_seq = {name: {metric: loss[mask]} for name, loss in losses.items()}
        for name in per_seq:
            for m in (extra.get(g, ()) if name in preds else ()):
                per_seq[name][m] = EXTRA_METRICS[m](preds[name][mask], target[mask])
        for name, values in per_seq.items():
            entry = {m: curve_ci(v) for m, v in values.items()}
            if name != "model" and name in preds and "model" in per_seq:  # not for bound-only entries
                entry["model_excess_over"] = {m: excess_ratio_ci(per_seq["model"][m], v) for m, v in values.items()
                                              if m in per_seq["model"]}
            res["predictors"][name] = entry
        if reference in losses and "model" in losses:
            res["model_minus_reference"] = curve_ci(losses["model"][mask] - losses[reference][mask])
            known = res["predictors"][reference].get("model_excess_over", {}).get(metric)  # computed above
            res["excess_risk_ratio"] = known or excess_ratio_ci(losses["model"][mask], losses[reference][mask])
        out[g] = res
    return out


EXTRA_METRICS = {"sign_error": sign_error}


def _cell(c: dict[str, list[float]], n: int, fmt: str = ".4f") -> str:
    return f"{c['mean'][n]:{fmt}} [{c['ci_low'][n]:{fmt}}, {c['ci_high'][n]:{fmt}}]"


def curves_markdown(result: dict[str, Any]) -> list[str]:
    """Tables at the ``table_positions`` per group (the full curves are in the JSON)."""
    ns = result["table_positions"]
    sizes = result["positions"]
    metric = result["metric"]
    lines = [f"## Error over context length ({result['metric_name']}, mean [95% CI])", "",
             f"Reference: `{result['reference']}`; excess-risk ratio CI by the delta method.", ""]
    for g, res in result["groups"].items():
        lines += [f"### {g} ({res['sequences']} sequences)", "",
                  "| predictor | sees | " + " | ".join(f"n = {sizes[i]}" for i in ns) + " |", "|" + "---|" * (2 + len(ns))]
        for name, e in res["predictors"].items():
            sees = result["predictors"][name]["sees"]
            lines.append(f"| {name} | {sees} | " + " | ".join(_cell(e[metric], n) for n in ns) + " |")
            for m in (k for k in e if k not in (metric, "model_excess_over")):
                lines.append(f"| {name}: {m.replace('_', ' ')} | {sees} | " + " | ".join(_cell(e[m], n, ".3f") for n in ns) + " |")
        if "model_minus_reference" in res:
            lines.append("| model − reference (paired) | | " + " | ".join(_cell(res["model_minus_reference"], n, "+.4f") for n in ns) + " |")
            lines.append("| (model − reference)/reference | | " + " | ".join(_cell(res["excess_risk_ratio"], n, "+.3f") for n in ns) + " |")
        lines.append("")
    return lines


def _error_range(res: dict[str, Any], metric: str, primary: str, reference: str) -> tuple[float, float]:
    """y limits: every curve's minimum, up to 4× the highest of the model, the reference and the
    n = 0 errors (least squares near n = d can be 10⁶× larger and would flatten everything else)."""
    def curve(name: str) -> list[float]:
        e = res["predictors"][name]
        return e[metric if metric in e else primary]["mean"]

    curves = {name: curve(name) for name in res["predictors"]}
    low = min((v for c in curves.values() for v in c if v > 0), default=1e-6)
    tops = [max(curves[k]) for k in ("model", reference) if k in curves] + [c[0] for c in curves.values()]
    return 0.7 * low, 4 * max(tops)


def context_length_figure(result: dict[str, Any], *, metric: str | None = None):
    """Error vs n, one panel per group (σ level, task type), the model against every baseline, 95% CI bands.
    A pure function of the result; returns a matplotlib Figure (log y axis: least squares peaks at n = d)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric or result["metric"]
    groups = [g for g in result["groups"] if g != "all"] or ["all"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    names = list(result["groups"][groups[0]]["predictors"])
    for ax, g in zip(axes[0], groups):
        res = result["groups"][g]
        for i, name in enumerate(names):
            e = res["predictors"][name]
            c = e[metric if metric in e else result["metric"]]
            n = result["positions"]
            model = name == "model"
            style = "-" if model else (":" if result["predictors"][name]["sees"] != "honest" else "--")
            color = "black" if model else cmap(i % 10)
            ax.plot(n, c["mean"], style, color=color, lw=2 if model else 1.2, label=name)
            ax.fill_between(n, c["ci_low"], c["ci_high"], color=color, alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_ylim(*_error_range(res, metric, result["metric"], result["reference"]))
        ax.set_xlabel("in-context examples n")
        ax.set_title(f"{g} ({res['sequences']} sequences)", fontsize=10)
    axes[0][0].set_ylabel(result["metric_name"] if metric == result["metric"] else metric.replace("_", " "))
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{result['task']}: error vs context length (95% CI bands; dotted = sees more than the tokens; "
                 "curves above the frame are clipped)", fontsize=10)
    fig.tight_layout()
    return fig


