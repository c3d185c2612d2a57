"""Held-out evaluation of a run: the model and every baseline on the same
sequences, with 95% CIs, paired CIs against the model, and a per-α breakdown.

The held-out set is drawn from its own seed stream (``EVAL_STREAM``), never
from the training data's, and is the same for every run with the same seed,
so runs can be compared sequence by sequence.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selectlens.baselines import (
    baseline_sees, fit_selection_baselines, make_baselines, noise_floor_losses, pointwise_loss,
)
from selectlens.config import Config, check_device
from selectlens.evaluate.context_length import context_length_markdown, evaluate_raw_model, write_context_length_eval
from selectlens.evaluate.metrics import bootstrap_ratio_ci, mean_ci, paired_diff_ci
from selectlens.model.gpt2 import SelectionTransformer
from selectlens.fileio import atomic_write
from selectlens.rundir import weights_sha256
from selectlens.tasks.memory import check_memory, eval_bytes
from selectlens.tasks.generators import EVAL_STREAM, TaskBatch, make_generator, make_task, stream_seed


def heldout_batch(config: Config, sequences: int, device: torch.device | str = "cpu") -> TaskBatch:
    """The fixed held-out set for ``config.seed``."""
    return make_task(config, device=device).sample(sequences, make_generator(stream_seed(config.seed, EVAL_STREAM), device))


METRIC_NAMES = {"mse": "squared error", "bce": "log-loss"}


def _summary(losses: torch.Tensor) -> dict[str, float]:
    m, lo, hi = mean_ci(losses)
    return {"mean": m, "ci_low": lo, "ci_high": hi}


def _metric_name(task, metric: str) -> str:
    return "Brier score" if metric == "mse" and task.loss == "bce" else METRIC_NAMES[metric]


def _predictor_entry(name: str, losses: torch.Tensor, model_losses: torch.Tensor, alphas: torch.Tensor,
                     levels: list[float]) -> dict[str, Any]:
    """One table row: mean with CI, the paired CI of (predictor − model), per-α means, what it sees."""
    entry: dict[str, Any] = _summary(losses)
    if name != "model":
        d, dlo, dhi = paired_diff_ci(losses, model_losses)
        entry.update(paired_diff=d, paired_diff_ci=[dlo, dhi], model_better=bool(dlo > 0))
    entry["per_alpha"] = {f"{a:g}": _summary(losses[alphas == a]) for a in levels}
    entry["sees"] = baseline_sees(name)
    entry["oracle"] = entry["sees"] == "oracle"
    return entry


def _gap_closed(losses: dict[str, torch.Tensor], best: str) -> dict[str, Any] | None:
    """(best honest − model)/(best honest − bound) with a paired bootstrap CI over sequences; None without a bound."""
    if "bayes_full_information" not in losses:
        return None
    num = losses[best] - losses["model"]
    den = losses[best] - losses["bayes_full_information"]
    ratio, lo, hi = bootstrap_ratio_ci(num, den)
    return {"best_honest": best, "bound": "bayes_full_information", "value": ratio, "ci": [lo, hi],
            "significant": bool(lo > 0 or hi < 0)}


def evaluate_metric(task, batch: TaskBatch, model_pred: torch.Tensor, config: Config, metric: str) -> dict[str, Any]:
    """Every predictor under ``metric`` (``mse`` or ``bce``), each baseline selecting and fitted by ``metric``
    on training data: the table, the fit, the best honest baseline (chosen on training data) and the gap closed."""
    fit = fit_selection_baselines(task, config.seed, config.eval.temperature_sequences, metric)
    preds = {"model": model_pred, **{name: fn(batch) for name, fn in make_baselines(task, fit).items()}}
    losses = {name: pointwise_loss(p, batch.target, metric).double().cpu() for name, p in preds.items()}
    if task.loss == "mse":
        losses["noise_floor"] = noise_floor_losses(batch, task.data.noise_scale).cpu()
    alphas = batch.alpha.cpu()
    levels = sorted({float(a) for a in alphas.tolist()})
    table = {name: _predictor_entry(name, l, losses["model"], alphas, levels) for name, l in losses.items()}
    return {"metric": metric, "metric_name": _metric_name(task, metric), "predictors": table,
            "fit": fit.as_dict(), "best_honest": fit.best_honest, "gap_closed": _gap_closed(losses, fit.best_honest)}


def evaluate_model(
    model: SelectionTransformer, config: Config, *, sequences: int | None = None, device: str | None = None
) -> dict[str, Any]:
    """Evaluate ``model`` against every baseline; returns the ``eval.json`` content.

    Regression: squared error. Classification: the Brier score and the log-loss, each with its own
    baselines fitted by it. ``predictors`` (the squared-error / Brier table, with ``mse`` kept as the
    mean's key) is what older readers use; ``tables`` holds every metric."""
    dev = check_device(device or config.device)
    n = sequences or config.eval.sequences
    check_memory(eval_bytes(config, n), f"evaluating on {n:,} held-out sequences", str(dev), "lower --sequences")
    task = make_task(config, device=dev)
    batch = heldout_batch(config, n, dev)
    if config.data.is_raw:  # raw-data tasks: every context length, per σ and task type
        return evaluate_raw_model(model.to(dev), task, batch, seed=config.seed)
    model_pred = model.to(dev).predict_in_chunks(batch.tokens)
    metrics = ["mse"] if task.loss == "mse" else ["mse", "bce"]
    tables = {m: evaluate_metric(task, batch, model_pred, config, m) for m in metrics}
    primary = tables["mse"]
    for e in primary["predictors"].values():
        e["mse"] = e["mean"]
    return {
        "task": config.data.task_name,
        "sequences": n,
        "seed": config.seed,
        "metric": "mse",
        "context_softmax_temperature": primary["fit"]["temperature"],
        "predictors": primary["predictors"],
        "tables": tables,
    }


def _table_markdown(t: dict[str, Any]) -> list[str]:
    preds = t["predictors"]
    alphas = list(preds["model"]["per_alpha"])
    lines = ["| predictor | sees | " + t["metric_name"] + " | 95% CI | baseline − model (paired 95% CI) | "
             + " | ".join(f"α={a}" for a in alphas) + " |", "|" + "---|" * (5 + len(alphas))]
    for name, e in preds.items():
        paired = "—" if name == "model" else (
            f"{e['paired_diff']:+.5f} [{e['paired_diff_ci'][0]:+.5f}, {e['paired_diff_ci'][1]:+.5f}]"
            + (" model better" if e["model_better"] else (" baseline better" if e["paired_diff_ci"][1] < 0 else " not significant"))
        )
        per = " | ".join(f"{e['per_alpha'][a]['mean']:.5f}" for a in alphas)
        lines.append(f"| {name} | {e['sees']} | {e['mean']:.5f} | [{e['ci_low']:.5f}, {e['ci_high']:.5f}] | {paired} | {per} |")
    return lines


def fit_summary(t: dict[str, Any]) -> str:
    """One paragraph: what the baselines fitted on training data, and which honest baseline is best there."""
    f = t["fit"]
    text = (f"Fitted on training data by {t['metric_name']}: context-softmax temperature {f['temperature']:.4g}, "
            f"oracle-softmax temperature {f['oracle_temperature']:.4g}")
    st = f.get("stacking")
    if st:
        est = st["estimator"]
        text += (f"; context_stacking: {st['kind']}, {'with' if st['intercept'] else 'no'} intercept, shrunk towards "
                 f"{'the average' if st['prior'] == 'average' else 'zero'}, penalty per estimated level "
                 + ", ".join(f"α={a:g}: {p:.4g}" for a, p in zip(est["levels"], st["penalties"]))
                 + f" (level estimated by thresholds {', '.join(f'{c:.4g}' for c in est['thresholds'])} on candidate "
                 f"{est['candidate']}'s mean visible loss; {100 * est['accuracy']:.1f}% correct on training data)")
    return text + f". Best honest baseline on training data: {t['best_honest']}."


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
    """The evaluation tables (one per metric) as Markdown (raw runs: the context-length tables)."""
    if result.get("layout") == "interleaved":
        return context_length_markdown(result)
    lines = [f"# Evaluation: {result['task']}, {result['sequences']} held-out sequences (seed {result['seed']})", ""]
    for t in result["tables"].values():
        lines += [f"## {t['metric_name']}", "", *_table_markdown(t), "", fit_summary(t), "", gap_closed_text(t), ""]
    lines += ["Sees: honest = only the tokens; latent = also α (and x); oracle = the answer; bound = a reference no "
              "predictor of the tokens beats in expectation (not a competitor).", ""]
    return "\n".join(lines)


def curve_baseline(metrics: list[dict[str, Any]], eval_result: dict[str, Any] | None = None) -> str | None:
    """The baseline the training-curve panel compares the model with: eval's best honest baseline
    (chosen on training data) when the metrics log it, else context-validation select, else the
    per-epoch baseline with the lowest mean loss that is neither an oracle nor a bound."""
    logged = metrics[0]["baselines"] if metrics else {}
    best = ((eval_result or {}).get("tables", {}).get("mse", {}) or {}).get("best_honest")
    for name in (best, "context_validation_select"):
        if name in logged:
            return name
    honest = [n for n in logged if not n.startswith(("oracle", "bayes_full", "type_oracle"))]
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
    _plot_difference_panel(top, metrics, curve_baseline(metrics, eval_result))
    _plot_raw_curves(ax, metrics, eval_result)
    fig.tight_layout()
    return fig


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
    ax.plot(seqs, [m["train_loss"] for m in metrics], color="gray", lw=1, alpha=0.6, label="model (train)")
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
    if losses:
        lo = min(losses)
        ax.set_ylim(lo * 0.95, min(max(losses), lo * 2.0))
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Test loss over training (each epoch's held-out split)")


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
    """Write ``eval.md``, ``training_curves.png`` (raw runs: also ``context_length.png``) and, last,
    ``eval.json`` into ``run_dir``.

    ``eval.json`` records the sha256 of the run's weights (``model_sha256``) so that a resumed
    training can tell stale outputs; written last, it is current only when the others are.
    """
    if result.get("layout") == "interleaved":
        paths = write_context_length_eval(run_dir, result) | {"png": run_dir / "training_curves.png"}
    else:
        paths = {"json": run_dir / "eval.json", "md": run_dir / "eval.md", "png": run_dir / "training_curves.png"}
        atomic_write(paths["md"], eval_markdown(result).encode())
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
