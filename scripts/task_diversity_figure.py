"""The memorisation-to-generalisation transition of task diversity, from a sweep over ``data.pool_size``.

For every finished trial: the model's error on fresh tasks (w ~ N(0, I)) and on pool tasks beside dMMSE
(Bayes for the pool) and ridge at λ = dσ² (Bayes for fresh tasks), from its eval.json; and its agreement with
each, the mean squared distance between the model's predictions and theirs (not the target) on fresh held-out
sequences, each with a 95% CI over sequences. Writes a PNG with both panels and a Markdown table.

    python scripts/task_diversity_figure.py sweeps/task_diversity --out docs/task_diversity [--sequences 4000]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from selectlens.baselines import suite_for
from selectlens.evaluate import heldout_batch, mean_ci
from selectlens.rundir import load_run_model
from selectlens.tasks import make_task


def trial_row(run: Path, sequences: int) -> dict | None:
    """One trial's numbers, or None if it has no eval.json yet."""
    if not (run / "eval.json").is_file():
        return None
    ev = json.loads((run / "eval.json").read_text())
    model, cfg = load_run_model(run)
    task = make_task(cfg)
    batch = heldout_batch(cfg, sequences)
    fresh = task.groups(batch)["fresh"]
    suite = suite_for(task)
    preds = suite.predictors(None)
    ridge = f"ridge[{task.noise_levels[0]:g}]"
    model_pred = model.predict_positions(batch.tokens, task.readout).double()
    row = {"M": cfg.data.pool_size, "trial": run.name}
    for name in ("model", "dmmse", ridge):
        for group in ("fresh", "pool"):
            s = ev["predictors"][name]["per_group"][group]
            row[f"{'ridge' if name == ridge else name}_{group}"] = [s["mean"], s["ci_low"], s["ci_high"]]
    with torch.no_grad():
        for name in ("dmmse", ridge):
            dist = ((model_pred - preds[name](batch).double()) ** 2).mean(1)[fresh]
            row[f"distance_{'ridge' if name == ridge else name}_fresh"] = list(mean_ci(dist))
    return row


def figure(rows: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    M = [r["M"] for r in rows]
    fig, (err, agree) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, color, label in (("model", "black", "model"), ("dmmse", "tab:red", "dMMSE (Bayes for the pool)"),
                              ("ridge", "tab:blue", "ridge λ = dσ² (Bayes for fresh tasks)")):
        for group, style in (("fresh", "-"), ("pool", ":")):
            v = [r[f"{key}_{group}"] for r in rows]
            err.plot(M, [x[0] for x in v], style, color=color, marker="o", label=f"{label}, {group}")
            err.fill_between(M, [x[1] for x in v], [x[2] for x in v], color=color, alpha=0.15)
    err.set(xscale="log", yscale="log", xlabel="pool size M (training tasks)", ylabel="squared error (all positions)",
            title="Error on fresh (solid) and pool (dotted) tasks, 95% CI")
    err.legend(fontsize=7)
    for key, color, label in (("dmmse", "tab:red", "to dMMSE"), ("ridge", "tab:blue", "to ridge")):
        v = [r[f"distance_{key}_fresh"] for r in rows]
        agree.plot(M, [x[0] for x in v], "-o", color=color, label=label)
        agree.fill_between(M, [x[1] for x in v], [x[2] for x in v], color=color, alpha=0.15)
    agree.set(xscale="log", yscale="log", xlabel="pool size M", ylabel="mean (model − predictor)²",
              title="Agreement on fresh tasks: which predictor the model tracks")
    agree.legend(fontsize=7)
    fig.tight_layout()
    return fig


def table(rows: list[dict]) -> str:
    f = lambda v: f"{v[0]:.4f} [{v[1]:.4f}, {v[2]:.4f}]"  # noqa: E731
    lines = ["| M | model, fresh | dMMSE, fresh | ridge, fresh | model, pool | dMMSE, pool | model–dMMSE distance | model–ridge distance |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['M']} | {f(r['model_fresh'])} | {f(r['dmmse_fresh'])} | {f(r['ridge_fresh'])} | {f(r['model_pool'])} | "
              f"{f(r['dmmse_pool'])} | {f(r['distance_dmmse_fresh'])} | {f(r['distance_ridge_fresh'])} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path)
    p.add_argument("--out", type=Path, required=True, help="output stem: writes STEM.png, STEM.md and STEM.json")
    p.add_argument("--sequences", type=int, default=4000, help="held-out sequences for the agreement")
    args = p.parse_args(argv)
    trials = sorted((args.sweep / "trials").glob("*/")) if (args.sweep / "trials").is_dir() else []
    if not trials:
        print(f"error: {args.sweep} has no trials", file=sys.stderr)
        return 2
    rows = sorted((r for r in (trial_row(t, args.sequences) for t in trials) if r is not None), key=lambda r: r["M"])
    if not rows:
        print(f"error: no trial of {args.sweep} has an eval.json yet", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure(rows).savefig(args.out.with_suffix(".png"), dpi=110)
    args.out.with_suffix(".md").write_text(table(rows))
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out.with_suffix('.png')}, .md and .json ({len(rows)} trials)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
