"""Held-out evaluation of a run: the model and every baseline on the same
sequences, with 95% CIs, paired CIs against the model, and a per-α breakdown.

The held-out set is drawn from its own seed stream (``EVAL_STREAM``), never
from the training data's, and is the same for every run with the same seed,
so runs can be compared sequence by sequence.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selectlens.baselines import BaselineSuite, pointwise_loss, suite_for
from selectlens.config import Config, check_device
from selectlens.evaluate.context_length import context_length_figure, curve_ci, curves_markdown, group_curves
from selectlens.evaluate.metrics import bootstrap_ratio_ci, mean_ci, paired_diff_ci
from selectlens.model.gpt2 import SelectionTransformer
from selectlens.fileio import atomic_write
from selectlens.rundir import weights_sha256
from selectlens.tasks.memory import check_memory, eval_bytes
from selectlens.tasks.protocol import EVAL_STREAM, Batch, TaskFamily, make_generator, make_task, stream_seed


def heldout_batch(config: Config, sequences: int, device: torch.device | str = "cpu") -> Batch:
    """The fixed held-out set for ``config.seed`` (the task's ``sample_for_eval``)."""
    task = make_task(config, device=device)
    return task.sample_for_eval(sequences, make_generator(stream_seed(config.seed, EVAL_STREAM), device))


METRIC_NAMES = {"mse": "squared error", "bce": "log-loss"}


def _summary(losses: torch.Tensor) -> dict[str, float]:
    m, lo, hi = mean_ci(losses)
    return {"mean": m, "ci_low": lo, "ci_high": hi}


def metric_name(task: TaskFamily, metric: str) -> str:
    return "Brier score" if metric == "mse" and task.loss == "bce" else METRIC_NAMES[metric]


def _predictor_entry(name: str, losses: torch.Tensor, model_losses: torch.Tensor, groups: dict[str, torch.Tensor],
                     sees: str) -> dict[str, Any]:
    """One table row: mean with CI, the paired CI of (predictor − model), per-group means, what it sees.
    ``losses`` are per sequence (the mean over the read-out positions)."""
    entry: dict[str, Any] = _summary(losses)
    if name != "model":
        d, dlo, dhi = paired_diff_ci(losses, model_losses)
        entry.update(paired_diff=d, paired_diff_ci=[dlo, dhi], model_better=bool(dlo > 0))
    entry["per_group"] = {g: _summary(losses[m]) for g, m in groups.items() if g != "all"}
    entry["sees"] = sees
    return entry


def _gap_closed(losses: dict[str, torch.Tensor], best: str, bound: str | None) -> dict[str, Any] | None:
    """(best honest − model)/(best honest − bound) with a paired bootstrap CI over sequences; None without a bound."""
    if bound is None or bound not in losses or bound == best:
        return None
    num = losses[best] - losses["model"]
    den = losses[best] - losses[bound]
    ratio, lo, hi = bootstrap_ratio_ci(num, den)
    return {"best_honest": best, "bound": bound, "value": ratio, "ci": [lo, hi], "significant": bool(lo > 0 or hi < 0)}


def _as_positions(pred: torch.Tensor) -> torch.Tensor:
    return pred if pred.dim() == 2 else pred.unsqueeze(1)


def evaluate_metric(task: TaskFamily, suite: BaselineSuite, batch: Batch, model_pred: torch.Tensor, config: Config,
                    metric: str) -> dict[str, Any]:
    """Every predictor under ``metric``, each baseline selecting and fitted by ``metric`` on training data:
    the table, the fit, the reference (best honest, chosen on training data), the gap closed and the curves."""
    fit = suite.fit(config.seed, config.eval.temperature_sequences, metric)
    preds = {"model": model_pred, **{name: fn(batch) for name, fn in suite.predictors(fit).items()}}
    preds = {name: _as_positions(p) for name, p in preds.items()}
    target = batch.targets
    pointwise = {name: pointwise_loss(p.double(), target.double(), metric).cpu() for name, p in preds.items()}  # [B, P]
    pointwise.update({name: _as_positions(l.double().cpu()) for name, l in suite.extra_losses(batch, metric).items()})
    losses = {name: l.mean(1) for name, l in pointwise.items()}  # [B]: per sequence
    groups = {g: m.cpu() for g, m in task.groups(batch).items()}
    sees = {name: "bound" if name not in preds else suite.sees(name) for name in losses}
    table = {name: _predictor_entry(name, l, losses["model"], groups, sees[name]) for name, l in losses.items()}
    reference = suite.reference(fit)
    curves = group_curves({k: v.cpu() for k, v in preds.items()}, pointwise, groups, reference, metric,
                          {g: task.curve_metrics(g) for g in groups}, target.cpu())
    if suite.non_selecting in pointwise and reference in pointwise:
        mark_selection_shown(curves, pointwise, groups, reference, suite.non_selecting)
    return {"metric": metric, "metric_name": metric_name(task, metric), "predictors": table,
            "fit": fit.as_dict(), "best_honest": fit.best_honest, "reference": reference, "bound": suite.bound,
            "gap_closed": _gap_closed(losses, reference, suite.bound), "fit_summary": suite.describe_fit(fit, metric_name(task, metric)),
            "groups": curves}


def mark_selection_shown(curves: dict[str, Any], pointwise: dict[str, torch.Tensor], groups: dict[str, torch.Tensor],
                         reference: str, non_selecting: str) -> None:
    """Per group and position: the excess of the best rule that does not select (``non_selecting``) over the
    reference, and ``selection_shown``: whether the upper end of the model's paired excess CI lies below it,
    where that excess is itself significantly above 0 (its paired CI's lower end > 0)."""
    for g, mask in groups.items():
        res = curves[g]
        line = curve_ci(pointwise[non_selecting][mask] - pointwise[reference][mask])
        res["non_selecting"] = non_selecting
        res["non_selecting_excess"] = line
        # where the non-selecting rule is not significantly worse than the reference (e.g. n = 0, where every
        # rule predicts the prior mean) there is nothing selection could show
        res["selection_shown"] = [bool(hi < m and lo > 0) for hi, m, lo in
                                  zip(res["model_minus_reference"]["ci_high"], line["mean"], line["ci_low"])]


def selection_statements(result: dict[str, Any]) -> list[str]:
    """One sentence per group (σ level, …) where the model's excess-risk CI lies below the best non-selecting
    rule's excess: "selection shown at sigma=0.1 for n ≥ 5" (or the list of n). Nothing where it is not shown."""
    out = []
    sizes = result["positions"]
    for g, res in result["groups"].items():
        if g == "all" or not any(res.get("selection_shown", [])):
            continue
        ns = [sizes[i] for i, shown in enumerate(res["selection_shown"]) if shown]
        tail = ns[0] if ns == sizes[sizes.index(ns[0]):] else None
        where = f"n ≥ {tail}" if tail is not None else "n ∈ {" + ", ".join(map(str, ns)) + "}"
        out.append(f"selection shown at {g} for {where}: the upper end of the model's paired excess-risk CI over "
                   f"{result['reference']} is below the excess of {res['non_selecting']}, the best rule that does not select")
    return out


def evaluate_predictions(task: TaskFamily, batch: Batch, model_pred: torch.Tensor, config: Config) -> dict[str, Any]:
    """The ``eval.json`` content from the model's predictions ``[B, P]`` (or ``[B]``) on the held-out ``batch``:
    one table per metric of the task (the first is the primary one), per-group and per-position results."""
    suite = suite_for(task)
    tables = {m: evaluate_metric(task, suite, batch, model_pred, config, m) for m in task.metrics}
    primary = tables[task.metrics[0]]
    for t in tables.values():
        for e in t["predictors"].values():
            e[t["metric"]] = e["mean"]
    return {
        "task": getattr(task, "label", task.name),
        "family": task.name,
        "layout": task.layout,
        "sequences": len(batch),
        "seed": config.seed,
        "metric": primary["metric"],
        "metric_name": primary["metric_name"],
        "d": task.data.d_d,
        "N": task.data.N,
        "positions": task.context_sizes,
        "table_positions": task.curve_positions(),
        "reference": primary["reference"],
        "bound": primary["bound"],
        "predictors": primary["predictors"],
        "groups": primary["groups"],
        "tables": {m: {k: v for k, v in t.items() if k != "groups"} for m, t in tables.items()},
    } | ({"selection_shown": selection_statements({"positions": task.context_sizes, "groups": primary["groups"],
                                                    "reference": primary["reference"]})}
         if any("selection_shown" in res for res in primary["groups"].values()) else {})


def evaluate_model(
    model: SelectionTransformer, config: Config, *, sequences: int | None = None, device: str | None = None
) -> dict[str, Any]:
    """Evaluate ``model`` against every baseline of its task on the held-out set; returns the ``eval.json`` content."""
    dev = check_device(device or config.device)
    n = sequences or config.eval.sequences
    check_memory(eval_bytes(config, n), f"evaluating on {n:,} held-out sequences", str(dev), "lower --sequences")
    task = make_task(config, device=dev)
    batch = heldout_batch(config, n, dev)
    model_pred = model.to(dev).predict_positions(batch.tokens, task.readout)
    return evaluate_predictions(task, batch, model_pred, config)


def _table_markdown(t: dict[str, Any]) -> list[str]:
    preds = t["predictors"]
    groups = list(preds["model"]["per_group"])
    lines = ["| predictor | sees | " + t["metric_name"] + " | 95% CI | baseline − model (paired 95% CI) | "
             + " | ".join(groups) + " |", "|" + "---|" * (5 + len(groups))]
    for name, e in preds.items():
        paired = "—" if name == "model" else (
            f"{e['paired_diff']:+.5f} [{e['paired_diff_ci'][0]:+.5f}, {e['paired_diff_ci'][1]:+.5f}]"
            + (" model better" if e["model_better"] else (" baseline better" if e["paired_diff_ci"][1] < 0 else " not significant"))
        )
        per = " | ".join(f"{e['per_group'][g]['mean']:.5f}" for g in groups)
        lines.append(f"| {name} | {e['sees']} | {e['mean']:.5f} | [{e['ci_low']:.5f}, {e['ci_high']:.5f}] | {paired} | {per} |")
    return lines


def fit_summary(t: dict[str, Any]) -> str:
    """One paragraph: what the baselines fitted on training data, and which honest baseline is the reference."""
    return t["fit_summary"]


def gap_closed_text(t: dict[str, Any]) -> str:
    g = t.get("gap_closed")
    if not g:
        return "No closed-form information bound for this task, so no gap closed."
    verdict = "" if g["significant"] else " (not significantly different from 0)"
    if g["significant"] and g["ci"][1] < 0:
        verdict = " (negative: the model is worse than the best honest baseline)"
    return (f"Gap closed (best honest {g['best_honest']} − model)/(best honest − {g['bound']}): "
            f"{g['value']:.3f} [{g['ci'][0]:.3f}, {g['ci'][1]:.3f}] (95% paired bootstrap over sequences){verdict}.")


def eval_markdown(result: dict[str, Any]) -> str:
    """The evaluation tables (one per metric) as Markdown, and the per-position tables where the model
    predicts at several positions."""
    lines = [f"# Evaluation: {result['task']}, {result['sequences']} held-out sequences (seed {result['seed']})", ""]
    for t in result["tables"].values():
        lines += [f"## {t['metric_name']}", "", "Per sequence: the mean over the read-out positions.", "",
                  *_table_markdown(t), "", fit_summary(t), "", gap_closed_text(t), ""]
    if len(result["positions"]) > 1:
        lines += curves_markdown(result)
    if "selection_shown" in result:
        shown = result["selection_shown"] or ["selection not shown at any σ and n: the model's paired excess-risk CI "
                                              "never lies below the best non-selecting rule's excess"]
        lines += ["## Does the model select?", "", *[f"- {s}" for s in shown], ""]
    lines += ["Sees: honest = only the tokens; latent = also a latent variable (α, σ, the type, x); oracle = the answer; "
              "bound = a reference no predictor of the tokens beats in expectation (not a competitor).", ""]
    return "\n".join(lines)


def curve_baseline(metrics: list[dict[str, Any]], eval_result: dict[str, Any] | None = None) -> str | None:
    """The baseline the training-curve panel compares the model with: eval's best honest baseline
    (chosen on training data) when the metrics log it, else context-validation select, else the
    per-epoch baseline with the lowest mean loss that is neither an oracle nor a bound."""
    logged = metrics[0]["baselines"] if metrics else {}
    best = (eval_result or {}).get("reference")
    for name in (best, "context_validation_select"):
        if name in logged:
            return name
    sees = {n: e.get("sees") for n, e in (eval_result or {}).get("predictors", {}).items()}
    honest = [n for n in logged if sees.get(n, "honest") == "honest" and not n.startswith("oracle")]
    return min(honest, key=lambda n: np.mean([m["baselines"][n] for m in metrics]), default=None)


def smoothed_difference(metrics: list[dict[str, Any]], baseline: str, window: int | None = None):
    """Per epoch, the paired difference ``baseline − model`` of test losses (same sequences) and its
    trailing running mean over ``window`` epochs with a band of ±1.96·sd/√n (n epochs in the window).

    Returns ``(sequences [E], diff [E], mean [E], half_width [E])``; ``window`` defaults to a tenth
    of the epochs (at least 1, at most 25). Positive means the model is better.
    """
    seqs = np.array([m["sequences"] for m in metrics], dtype=float)
    diff = np.array([m["baselines"][baseline] - m["test_loss"] for m in metrics], dtype=float)
    k = window or max(1, min(25, len(diff) // 10))
    mean, half = np.empty_like(diff), np.zeros_like(diff)
    for i in range(len(diff)):
        w = diff[max(0, i - k + 1) : i + 1]
        mean[i] = w.mean()
        half[i] = 1.96 * w.std(ddof=1) / np.sqrt(len(w)) if len(w) > 1 else 0.0
    return seqs, diff, mean, half


def plot_training_curves(metrics: list[dict[str, Any]], out: Path, *, eval_result: dict[str, Any] | None = None) -> Path:
    """PNG of :func:`training_curves_figure`."""
    import matplotlib.pyplot as plt

    fig = training_curves_figure(metrics, eval_result=eval_result)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def training_curves_figure(metrics: list[dict[str, Any]], *, eval_result: dict[str, Any] | None = None):
    """Training as a figure: on top the paired difference (best honest baseline − model) per epoch,
    smoothed with a band (the comparison that decides "beats"), zoomed past warm-up, with the last
    window's paired CI marked; below, the raw test losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, ax) = plt.subplots(2, 1, figsize=(8, 9), height_ratios=[1, 1.2])
    compared = full_size_records(metrics)
    _plot_difference_panel(top, compared, curve_baseline(compared, eval_result))
    if compared is not metrics:
        top.set_title(top.get_title() + "\non the full-size test split (a curriculum run)", fontsize=10)
    _plot_raw_curves(ax, metrics, eval_result)
    fig.tight_layout()
    return fig


def full_size_records(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The epochs as scored on the full task: a curriculum run's ``full_size`` entries where every epoch has
    one (a run that began before runs kept that split mixes in none), else the records themselves."""
    if metrics and all("full_size" in m for m in metrics):
        return [{"sequences": m["sequences"], **m["full_size"]} for m in metrics]
    return metrics


WARMUP_SHARE = 0.1  # the difference panel's y-axis leaves out the first tenth of the epochs


def difference_panel_limits(diff: np.ndarray, mean: np.ndarray, half: np.ndarray,
                            window: int) -> tuple[int, tuple[float, float]]:
    """``(first epoch index shown to scale, (y low, y high))`` for the difference panel.

    Early in training the model is far behind the baseline (differences of −2 against ~0.01 at the
    end), which would squash the end of training into a flat line at 0; the y-axis therefore spans
    the per-epoch differences after the first :data:`WARMUP_SHARE` of the epochs, the running mean and
    band of the windows that lie wholly after it (``window`` epochs each), and 0, with a 5% margin.
    Earlier values run off the scale (the panel shades the warm-up).
    """
    start = int(np.ceil(WARMUP_SHARE * len(diff))) if len(diff) >= 10 else 0
    clean = min(len(diff) - 1, start + window - 1) if start else 0
    vals = np.concatenate([diff[start:], mean[clean:] - half[clean:], mean[clean:] + half[clean:], [0.0]])
    vals = vals[np.isfinite(vals)]
    lo, hi = float(vals.min()), float(vals.max())
    pad = 0.05 * (hi - lo) if hi > lo else max(abs(hi), 1e-6)
    return start, (lo - pad, hi + pad)


def _plot_difference_panel(ax, metrics: list[dict[str, Any]], baseline: str | None) -> None:
    if baseline is None or not metrics:
        ax.set_axis_off()
        return
    seqs, diff, mean, half = smoothed_difference(metrics, baseline)
    ax.plot(seqs, diff, color="gray", lw=0.6, alpha=0.5, label="per epoch")
    ax.plot(seqs, mean, color="C0", lw=2, label="running mean")
    ax.fill_between(seqs, mean - half, mean + half, color="C0", alpha=0.25, label="±1.96·sd/√window")
    ax.axhline(0.0, color="black", lw=0.8)
    start, ylim = difference_panel_limits(diff, mean, half, max(1, min(25, len(diff) // 10)))
    if start > 0:
        ax.axvspan(seqs[0], seqs[start], color="gray", alpha=0.12, lw=0, label="warm-up (off the scale)")
    ax.set_ylim(*ylim)
    lo, hi = mean[-1] - half[-1], mean[-1] + half[-1]
    ax.plot([seqs[-1], seqs[-1]], [lo, hi], color="C3", lw=3, solid_capstyle="butt",
            label=f"last window: {mean[-1]:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    ax.set_ylabel(f"{baseline} − model")
    ax.set_title(f"Paired difference of test loss vs {baseline} (above 0: model better)")
    ax.legend(fontsize=7)


def _plot_raw_curves(ax, metrics: list[dict[str, Any]], eval_result: dict[str, Any] | None) -> None:
    seqs = [m["sequences"] for m in metrics]
    ax.plot(seqs, [m["test_loss"] for m in metrics], color="black", lw=2, label="model (test)")
    full = [m.get("full_size", {}) for m in metrics]  # a curriculum: the split above is at each epoch's point
    curriculum = any(full)
    full_ref = next((n for n in ("bayes_posterior_mixture", "dmmse") if n in (full[-1].get("baselines") or {})), None)
    if curriculum:
        ax.plot(seqs, [f.get("test_loss", np.nan) for f in full], "-.", color="black", lw=1.2,
                label="model (full-size test split)")
        if full_ref:
            ax.plot(seqs, [f.get("baselines", {}).get(full_ref, np.nan) for f in full], "-.", color="C3", lw=1.2,
                    label=f"{full_ref} (full-size test split)")
    denoised = any(m.get("train_target") == "conditional_mean" for m in metrics)  # no label noise: ~E[σ²] lower
    weighted = any("train_position_weights" in m for m in metrics)  # a weighted mean: not on the test loss's scale
    if not weighted:
        ax.plot(seqs, [m["train_loss"] for m in metrics], color="gray", lw=1, alpha=0.6,
                label="model (train, vs E[y | x, w])" if denoised else "model (train)")
    names = list(metrics[0]["baselines"]) if metrics else []
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        vals = [m["baselines"][name] for m in metrics]
        style = ":" if name.startswith("oracle_") else "--"
        ax.plot(seqs, vals, style, color=cmap(i % 10), lw=1.2, label=name)
    if eval_result is not None and "model" in eval_result.get("predictors", {}) and "mse" in eval_result["predictors"]["model"]:
        ax.axhline(eval_result["predictors"]["model"]["mse"], color="black", lw=0.8, alpha=0.5)
    ax.set_xlabel("training sequences")
    ax.set_ylabel("test loss")
    losses = [m["test_loss"] for m in metrics] + [v for m in metrics for v in m["baselines"].values()]
    losses += [m["train_loss"] for m in metrics] if denoised and not weighted else []  # below every test curve: keep it in view
    if losses:
        lo = min(losses)
        hi = min(max(losses), lo * 2.0)
        if curriculum:  # the full-size curves lie above the point's: their last epoch stays in view
            hi = max([hi] + [1.05 * v for v in (full[-1].get("test_loss"), (full[-1].get("baselines") or {}).get(full_ref))
                             if v is not None and np.isfinite(v)])
        ax.set_ylim(lo * 0.95, hi)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Test loss over training (each epoch's held-out split"
                 + (" at its curriculum point)\ndash-dot: the model and the Bayes reference on a full-size split"
                    if curriculum else ")"))


def non_finite_keys(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths of NaN/±inf numbers in a JSON-like result (so a report never holds them unsaid)."""
    if isinstance(obj, dict):
        return [k for key, v in obj.items() for k in non_finite_keys(v, f"{prefix}{key}.")]
    if isinstance(obj, (list, tuple)):
        return [k for i, v in enumerate(obj) for k in non_finite_keys(v, f"{prefix}{i}.")]
    if isinstance(obj, float) and not np.isfinite(obj):
        return [prefix.rstrip(".")]
    return []


def write_eval(run_dir: Path, result: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, Path]:
    """Write ``eval.md``, ``training_curves.png``, ``context_length.png`` (where the model predicts at several
    positions) and, last, ``eval.json`` into ``run_dir``.

    ``eval.json`` records the sha256 of the run's weights (``model_sha256``) so that a resumed
    training can tell stale outputs; written last, it is current only when the others are.
    """
    paths = {"json": run_dir / "eval.json", "md": run_dir / "eval.md", "png": run_dir / "training_curves.png"}
    atomic_write(paths["md"], eval_markdown(result).encode())
    if len(result["positions"]) > 1:
        import matplotlib.pyplot as plt

        paths["curves"] = run_dir / "context_length.png"
        fig = context_length_figure(result)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
        atomic_write(paths["curves"], buf.getvalue())
    if metrics:
        plot_training_curves(metrics, paths["png"], eval_result=result)
    else:
        paths.pop("png")
    result["model_sha256"] = weights_sha256(run_dir)  # also in what `eval --json` prints
    bad = non_finite_keys(result)
    if bad:  # said in the file itself, and by the CLI
        result["non_finite"] = bad
    atomic_write(paths["json"], json.dumps(result, indent=2).encode())
    return paths
