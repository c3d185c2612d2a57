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

import torch

from selectlens.baselines import make_baselines, pointwise_loss, training_temperature
from selectlens.config import Config, check_device
from selectlens.evaluate.context_length import context_length_markdown, evaluate_raw_model, write_context_length_eval
from selectlens.evaluate.metrics import mean_ci, paired_diff_ci
from selectlens.model.gpt2 import SelectionTransformer
from selectlens.fileio import atomic_write
from selectlens.tasks.generators import EVAL_STREAM, TaskBatch, make_generator, make_task, stream_seed


def heldout_batch(config: Config, sequences: int, device: torch.device | str = "cpu") -> TaskBatch:
    """The fixed held-out set for ``config.seed``."""
    return make_task(config, device=device).sample(sequences, make_generator(stream_seed(config.seed, EVAL_STREAM), device))


def _summary(losses: torch.Tensor) -> dict[str, float]:
    m, lo, hi = mean_ci(losses)
    return {"mean": m, "ci_low": lo, "ci_high": hi}


def evaluate_model(
    model: SelectionTransformer, config: Config, *, sequences: int | None = None, device: str | None = None
) -> dict[str, Any]:
    """Evaluate ``model`` against every baseline; returns the ``eval.json`` content."""
    dev = check_device(device or config.device)
    n = sequences or config.eval.sequences
    task = make_task(config, device=dev)
    batch = heldout_batch(config, n, dev)
    if config.data.is_raw:  # raw-data tasks: every context length, per σ and task type
        return evaluate_raw_model(model.to(dev), task, batch, seed=config.seed)
    temperature = training_temperature(task, config.seed, config.eval.temperature_sequences)
    model = model.to(dev)
    preds = {"model": model.predict_in_chunks(batch.tokens)}
    preds.update({name: fn(batch) for name, fn in make_baselines(task, temperature).items()})
    target = batch.target
    sq = {name: ((p - target) ** 2).double().cpu() for name, p in preds.items()}
    extra = task.loss if task.loss != "mse" else None
    ex = {name: pointwise_loss(p, target, extra).double().cpu() for name, p in preds.items()} if extra else {}
    alphas = batch.alpha.cpu()
    levels = sorted({float(a) for a in alphas.tolist()})
    predictors: dict[str, Any] = {}
    for name, losses in sq.items():
        m, lo, hi = mean_ci(losses)
        entry: dict[str, Any] = {"mse": m, "ci_low": lo, "ci_high": hi}
        if name != "model":
            d, dlo, dhi = paired_diff_ci(losses, sq["model"])
            entry["paired_diff"] = d
            entry["paired_diff_ci"] = [dlo, dhi]
            entry["model_better"] = bool(dlo > 0)
        if extra:
            entry[extra] = _summary(ex[name])
        entry["per_alpha"] = {f"{a:g}": _summary(losses[alphas == a]) for a in levels}
        entry["oracle"] = name.startswith("oracle_")
        predictors[name] = entry
    return {
        "task": config.data.task_name,
        "sequences": n,
        "seed": config.seed,
        "metric": "mse",
        "context_softmax_temperature": temperature,
        "predictors": predictors,
    }


def eval_markdown(result: dict[str, Any]) -> str:
    """The evaluation table as Markdown (raw runs: the context-length tables)."""
    if result.get("layout") == "interleaved":
        return context_length_markdown(result)
    preds = result["predictors"]
    alphas = list(preds["model"]["per_alpha"])
    head = "| predictor | MSE | 95% CI | baseline − model (paired 95% CI) | " + " | ".join(f"α={a}" for a in alphas) + " |"
    lines = [
        f"# Evaluation: {result['task']}, {result['sequences']} held-out sequences (seed {result['seed']})",
        "",
        head,
        "|" + "---|" * (4 + len(alphas)),
    ]
    for name, e in preds.items():
        label = f"{name} (oracle)" if e["oracle"] else name
        paired = "—" if name == "model" else (
            f"{e['paired_diff']:+.5f} [{e['paired_diff_ci'][0]:+.5f}, {e['paired_diff_ci'][1]:+.5f}]"
            + (" model better" if e["model_better"] else (" baseline better" if e["paired_diff_ci"][1] < 0 else ""))
        )
        per = " | ".join(f"{e['per_alpha'][a]['mean']:.5f}" for a in alphas)
        lines.append(f"| {label} | {e['mse']:.5f} | [{e['ci_low']:.5f}, {e['ci_high']:.5f}] | {paired} | {per} |")
    lines += ["", f"Context-softmax temperature (fitted on training data): {result['context_softmax_temperature']:.4g}.",
              "Oracles look at the answer; they bound what selection could achieve.", ""]
    return "\n".join(lines)


def plot_training_curves(metrics: list[dict[str, Any]], out: Path, *, eval_result: dict[str, Any] | None = None) -> Path:
    """PNG of test loss over training against the per-epoch baselines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    seqs = [m["sequences"] for m in metrics]
    ax.plot(seqs, [m["test_loss"] for m in metrics], color="black", lw=2, label="model (test)")
    ax.plot(seqs, [m["train_loss"] for m in metrics], color="gray", lw=1, alpha=0.6, label="model (train)")
    names = list(metrics[0]["baselines"]) if metrics else []
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        vals = [m["baselines"][name] for m in metrics]
        style = ":" if name.startswith("oracle_") else "--"
        ax.plot(seqs, vals, style, color=cmap(i % 10), lw=1.2, label=name)
    if eval_result is not None:
        e = eval_result["predictors"]["model"]
        ax.axhline(e["mse"], color="black", lw=0.8, alpha=0.5)
    ax.set_xlabel("training sequences")
    ax.set_ylabel("test loss")
    losses = [m["test_loss"] for m in metrics] + [v for m in metrics for v in m["baselines"].values()]
    if losses:
        lo = min(losses)
        ax.set_ylim(lo * 0.95, min(max(losses), lo * 2.0))
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Test loss over training (each epoch's held-out split)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_eval(run_dir: Path, result: dict[str, Any], metrics: list[dict[str, Any]]) -> dict[str, Path]:
    """Write ``eval.json``, ``eval.md`` and ``training_curves.png`` into ``run_dir`` (raw runs: also
    ``context_length.png``)."""
    if result.get("layout") == "interleaved":
        paths = write_context_length_eval(run_dir, result) | {"png": run_dir / "training_curves.png"}
    else:
        paths = {"json": run_dir / "eval.json", "md": run_dir / "eval.md", "png": run_dir / "training_curves.png"}
        atomic_write(paths["json"], json.dumps(result, indent=2).encode())
        atomic_write(paths["md"], eval_markdown(result).encode())
    if metrics:
        plot_training_curves(metrics, paths["png"], eval_result=result)
    else:
        paths.pop("png")
    return paths
