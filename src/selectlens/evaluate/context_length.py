"""Held-out evaluation of a raw-data (interleaved) run over context length.

For every number of in-context pairs n = 0..N−1 (the prediction at x-token n), per noise
level and per task type, the model and every raw baseline on the same sequences:

* squared error with a 95% CI over sequences (and, on classification sequences, the sign
  error: ``1[ŷ·y < 0]``, a prediction of exactly 0 counting ½ — a coin flip);
* the paired 95% CI of (model − reference) on the same sequences, the reference being the
  exact Bayes posterior mixture (``bayes_posterior_mixture``; Bayes-optimal for regression
  sequences only, which ``linear_or_logistic`` results say);
* the excess-risk ratio ``(model − reference)/reference = ā/b̄ − 1`` with a delta-method 95% CI:
  ``se = sd(a_i − (ā/b̄)·b_i) / (√n · b̄)`` over the paired per-sequence errors a (model), b (reference).

``context_length_result`` computes all of it from predictions alone (usable on exported
predictions); ``evaluate_raw_model`` runs the model and the baselines on a held-out batch;
``context_length_figure`` draws error vs n, one panel per group.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from selectlens.baselines.raw import baseline_sees, make_raw_baselines
from selectlens.evaluate.metrics import Z95, mean_ci, paired_diff_ci
from selectlens.fileio import atomic_write

REFERENCE = "bayes_posterior_mixture"


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


def sequence_groups(batch: Any) -> dict[str, Tensor]:
    """``[B]`` masks: ``all``, one ``sigma=<σ>`` per noise level (regression sequences), and
    ``classification`` where the batch has classification sequences."""
    groups = {"all": torch.ones_like(batch.is_regression, dtype=torch.bool)}
    reg = batch.is_regression
    for s in sorted({float(v) for v in batch.sigma[reg].tolist()}):
        groups[f"sigma={s:g}"] = reg & (batch.sigma == torch.tensor(s, dtype=batch.sigma.dtype, device=batch.sigma.device))
    if bool((~reg).any()):
        groups["classification"] = ~reg
    return groups


def _group_result(preds: dict[str, Tensor], target: Tensor, mask: Tensor, classification: bool) -> dict[str, Any]:
    sq = {name: (p[mask].double() - target[mask].double()) ** 2 for name, p in preds.items()}  # each [S, N]
    out: dict[str, Any] = {"sequences": int(mask.sum()), "predictors": {}}
    for name, p in preds.items():
        entry = {"mse": curve_ci(sq[name])}
        if classification:
            entry["sign_error"] = curve_ci(sign_error(p[mask], target[mask]))
        out["predictors"][name] = entry
    if "model" in sq and REFERENCE in sq:
        out["model_minus_reference"] = curve_ci(sq["model"] - sq[REFERENCE])
        out["excess_risk_ratio"] = excess_ratio_ci(sq["model"], sq[REFERENCE])
    return out


def _overall(preds: dict[str, Tensor], target: Tensor) -> dict[str, Any]:
    """Per predictor: the per-sequence MSE over every position (the training loss), with CIs and the
    paired CI of (predictor − model), in the selection eval's ``predictors`` shape."""
    per_seq = {name: ((p.double() - target.double()) ** 2).mean(1) for name, p in preds.items()}
    out: dict[str, Any] = {}
    for name, losses in per_seq.items():
        m, lo, hi = mean_ci(losses)
        entry: dict[str, Any] = {"mse": m, "ci_low": lo, "ci_high": hi}
        entry["sees"] = "model" if name == "model" else baseline_sees(name)
        entry["oracle"] = entry["sees"] == "latent"
        if name != "model" and "model" in per_seq:
            d, dlo, dhi = paired_diff_ci(losses, per_seq["model"])
            entry.update(paired_diff=d, paired_diff_ci=[dlo, dhi], model_better=bool(dlo > 0))
        out[name] = entry
    return out


def context_length_result(preds: dict[str, Tensor], batch: Any, *, task: str, seed: int | None = None) -> dict[str, Any]:
    """The ``eval.json`` content of a raw run from predictions ``{name: [B, N]}`` on ``batch`` (a ``RawBatch``).

    ``groups[g]["predictors"][name]["mse"]`` holds per-position ``mean``/``ci_low``/``ci_high``
    lists (n = 0..N−1); ``predictors`` the all-position summary.
    """
    target = batch.target.cpu()
    preds = {name: p.detach().cpu() for name, p in preds.items()}
    B, N = target.shape
    d = batch.x.shape[-1]
    groups = {g: _group_result(preds, target, m.cpu(), g == "classification") for g, m in sequence_groups(batch).items()}
    return {
        "task": task,
        "layout": "interleaved",
        "sequences": B,
        "seed": seed,
        "metric": "mse",
        "d": d,
        "N": N,
        "reference": REFERENCE,
        "excess_ratio_ci": "delta method",
        "table_positions": sorted({n for n in (d, 2 * d, N - 1) if n < N}),
        "predictors": _overall(preds, target),
        "groups": groups,
    }


def evaluate_raw_model(model: Any, task: Any, batch: Any, *, seed: int | None = None) -> dict[str, Any]:
    """The model (``predict_x_positions``) and every raw baseline of ``task`` on the held-out ``batch``."""
    preds = {"model": model.predict_x_positions(batch.tokens)}
    preds.update({name: fn(batch) for name, fn in make_raw_baselines(task).items()})
    return context_length_result(preds, batch, task=task.name, seed=seed)


def _cell(c: dict[str, list[float]], n: int, fmt: str = ".4f") -> str:
    return f"{c['mean'][n]:{fmt}} [{c['ci_low'][n]:{fmt}}, {c['ci_high'][n]:{fmt}}]"


def context_length_markdown(result: dict[str, Any]) -> str:
    """Compact tables at n = d, 2d, N−1 per group (the full curves are in the JSON)."""
    ns = result["table_positions"]
    lines = [f"# Evaluation over context length: {result['task']}, {result['sequences']} held-out sequences "
             f"(seed {result['seed']})", "",
             f"Squared error of the prediction of y_n from n in-context pairs (d = {result['d']}, N = {result['N']}), "
             "mean [95% CI]. Reference: the exact Bayes posterior mixture over the noise levels "
             f"(`{result['reference']}`); excess-risk ratio CI by the {result['excess_ratio_ci']}.", ""]
    for g, res in result["groups"].items():
        lines += [f"## {g} ({res['sequences']} sequences)", "",
                  "| predictor | sees | " + " | ".join(f"n = {n}" for n in ns) + " |", "|" + "---|" * (2 + len(ns))]
        for name, e in res["predictors"].items():
            sees = result["predictors"][name]["sees"]
            lines.append(f"| {name} | {sees} | " + " | ".join(_cell(e["mse"], n) for n in ns) + " |")
            if "sign_error" in e:
                lines.append(f"| {name}: sign error | {sees} | " + " | ".join(_cell(e["sign_error"], n, ".3f") for n in ns) + " |")
        if "model_minus_reference" in res:
            lines.append("| model − reference (paired) | | " + " | ".join(_cell(res["model_minus_reference"], n, "+.4f") for n in ns) + " |")
            lines.append("| (model − reference)/reference | | " + " | ".join(_cell(res["excess_risk_ratio"], n, "+.3f") for n in ns) + " |")
        lines.append("")
    lines += ["Latent predictors see the sequence's σ or task type (not available to the model).", ""]
    return "\n".join(lines)


def _error_range(res: dict[str, Any], metric: str) -> tuple[float, float]:
    """y limits: every curve's minimum, up to 4× the highest of the model, the reference and the
    n = 0 errors (least squares near n = d can be 10⁶× larger and would flatten everything else)."""
    def curve(name: str) -> list[float]:
        e = res["predictors"][name]
        return e["sign_error" if metric == "sign_error" and "sign_error" in e else "mse"]["mean"]

    curves = {name: curve(name) for name in res["predictors"]}
    low = min(v for c in curves.values() for v in c if v > 0)
    tops = [max(curves[k]) for k in ("model", REFERENCE) if k in curves] + [c[0] for c in curves.values()]
    return 0.7 * low, 4 * max(tops)


def context_length_figure(result: dict[str, Any], *, metric: str = "mse"):
    """Error vs n, one panel per group (σ level, task type), the model against every baseline, 95% CI bands.
    A pure function of the result; returns a matplotlib Figure (log y axis: least squares peaks at n = d)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in result["groups"] if g != "all"] or ["all"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    names = list(result["groups"][groups[0]]["predictors"])
    for ax, g in zip(axes[0], groups):
        res = result["groups"][g]
        for i, name in enumerate(names):
            e = res["predictors"][name]
            c = e["sign_error" if metric == "sign_error" and "sign_error" in e else "mse"]
            n = range(len(c["mean"]))
            model = name == "model"
            style = "-" if model else (":" if result["predictors"][name]["sees"] == "latent" else "--")
            color = "black" if model else cmap(i % 10)
            ax.plot(n, c["mean"], style, color=color, lw=2 if model else 1.2, label=name)
            ax.fill_between(n, c["ci_low"], c["ci_high"], color=color, alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_ylim(*_error_range(res, metric))
        ax.set_xlabel("in-context examples n")
        ax.set_title(f"{g} ({res['sequences']} sequences)", fontsize=10)
    axes[0][0].set_ylabel("squared error" if metric == "mse" else metric)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"{result['task']}: error vs context length (95% CI bands; dotted = sees latent σ/type; "
                 "curves above the frame are clipped)", fontsize=10)
    fig.tight_layout()
    return fig


def write_context_length_eval(run_dir: Path, result: dict[str, Any]) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and ``context_length.png`` into ``run_dir``."""
    import matplotlib.pyplot as plt

    paths = {"json": run_dir / "eval.json", "md": run_dir / "eval.md", "curves": run_dir / "context_length.png"}
    atomic_write(paths["json"], json.dumps(result, indent=2).encode())
    atomic_write(paths["md"], context_length_markdown(result).encode())
    fig = context_length_figure(result)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(paths["curves"], buf.getvalue())
    return paths
