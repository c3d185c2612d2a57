"""The three-model σ experiment's table: every raw run of a sweep evaluated on ONE held-out mixture set.

Each trial of ``configs/sweeps/noise_models.yaml`` is evaluated by the sweep on its own training
distribution; the experiment's question (does the mixture model track the Bayes mixture where the
single-σ models don't?) needs every model on the same mixture sequences. This script draws that set
once (the first trial's config with ``data.noise_levels`` set to the union of the trials' levels, its
eval stream), runs every finished trial's model and the raw baselines on it, and prints per σ and
n ∈ {d, 2d, N−1} (or ``--positions``):

* each predictor's squared error (the mean across seeds for the models);
* each model's excess risk over the Bayes mixture, (model − Bayes)/Bayes: per seed with its
  delta-method 95% CI over sequences, and across seeds the mean with a 95% Student-t interval.

Usage:
    python scripts/noise_models_table.py SWEEP_DIR [--sequences 20000] [--json OUT.json]
    python scripts/noise_models_table.py RUN_DIR RUN_DIR ...   # runs instead of a sweep
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch


def _runs(paths: list[Path]) -> list[Path]:
    """Run directories: the finished trials of a sweep directory, or the given runs."""
    from selectlens.sweeps.trial import read_status, trial_dir
    from selectlens.sweeps.store import read_sweep

    if len(paths) == 1 and (paths[0] / "sweep.json").is_file():
        _, trials = read_sweep(paths[0])
        return [trial_dir(paths[0], t.name) for t in trials if read_status(paths[0], t.name).get("status") == "done"]
    return paths


def _label(levels: list[float]) -> str:
    return "mixture {" + ", ".join(f"{s:g}" for s in levels) + "}" if len(levels) > 1 else f"σ = {levels[0]:g} only"


def cross_evaluate(runs: list[Path], sequences: int, positions: list[int] | None = None) -> dict:
    """Every run's model and the raw baselines on one held-out mixture set; see the module docstring."""
    from selectlens.baselines import pointwise_loss, suite_for
    from selectlens.config import load_config
    from selectlens.errors import SelectLensError
    from selectlens.evaluate.context_length import group_curves
    from selectlens.evaluate.runner import heldout_batch
    from selectlens.rundir import load_run_model
    from selectlens.sweeps.aggregate import t_interval
    from selectlens.tasks import make_task

    configs = {r: load_config(r / "config.yaml") for r in runs}
    levels = sorted({float(s) for c in configs.values() for s in c.data.noise_levels})
    mix = load_config(runs[0] / "config.yaml", [f"data.noise_levels={levels}", "data.noise_probs=null"])
    if positions is not None and any(not 0 <= n < mix.data.N for n in positions):  # before any model runs
        raise SelectLensError(f"--positions: n must be in 0..{mix.data.N - 1}")
    task = make_task(mix)
    suite = suite_for(task)
    fit = suite.fit(mix.seed, mix.eval.temperature_sequences, "mse")
    batch = heldout_batch(mix, sequences)
    target = batch.targets.double().cpu()  # [B, N]
    masks = {g: m.cpu() for g, m in task.groups(batch).items()}  # [B] bool each
    base = {name: fn(batch).cpu() for name, fn in suite.predictors(fit).items()}  # each [B, N]
    base_losses = {name: pointwise_loss(p.double(), target, "mse") for name, p in base.items()}
    per_run = {}
    for r in runs:
        model, _ = load_run_model(r)
        pred = model.predict_positions(batch.tokens, task.readout).cpu()  # [B, N]
        preds = {"model": pred} | base
        losses = {"model": pointwise_loss(pred.double(), target, "mse")} | base_losses
        res = {"groups": group_curves(preds, losses, masks, suite.reference(fit), "mse",
                                      {g: task.curve_metrics(g) for g in masks}, target)}
        per_run[str(r)] = {"label": _label(sorted(float(s) for s in configs[r].data.noise_levels)),
                           "seed": configs[r].seed, "groups": res["groups"]}
    res["table_positions"] = [task.context_sizes[i] for i in task.curve_positions()]
    ns = positions if positions is not None else res["table_positions"]
    groups = [g for g in res["groups"] if g.startswith("sigma=")]
    table = {}
    for g in groups:
        rows = {name: [res["groups"][g]["predictors"][name]["mse"]["mean"][n] for n in ns] for name in base}
        for label in dict.fromkeys(v["label"] for v in per_run.values()):
            mine = [v for v in per_run.values() if v["label"] == label]
            mse = [[v["groups"][g]["predictors"]["model"]["mse"]["mean"][n] for v in mine] for n in ns]
            ratio = [[v["groups"][g]["excess_risk_ratio"]["mean"][n] for v in mine] for n in ns]
            rows[label] = {"mse_mean": [sum(m) / len(m) for m in mse],
                           "excess_across_seeds": [t_interval(x) for x in ratio],
                           "per_seed": {v["seed"]: {k: v["groups"][g]["excess_risk_ratio"][k] for k in ("mean", "ci_low", "ci_high")}
                                        for v in mine}}
        table[g] = {"sequences": res["groups"][g]["sequences"], "rows": rows}
    return {"sequences": sequences, "noise_levels": levels, "positions": ns, "runs": [str(r) for r in runs], "table": table}


def markdown(result: dict) -> str:
    ns = result["positions"]
    lines = [f"Every model on the same {result['sequences']:,} held-out sequences of the mixture "
             f"σ ∈ {result['noise_levels']}; squared error (models: mean across seeds) and, in brackets, "
             f"the excess risk (model − Bayes)/Bayes: mean across seeds [95% t-interval across seeds; with one "
             f"seed, its delta-method 95% CI over sequences].", ""]
    for g, entry in result["table"].items():
        lines += [f"**{g.replace('sigma=', 'σ = ')}** ({entry['sequences']:,} sequences)", "",
                  "| predictor | " + " | ".join(f"n = {n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for name, row in entry["rows"].items():
            if isinstance(row, list):
                lines.append(f"| {name} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
            else:
                seeds = list(row["per_seed"].values())
                if len(seeds) == 1:  # one seed: its delta-method CI over sequences instead
                    s = seeds[0]
                    row = dict(row, excess_across_seeds=[(s["mean"][n], s["ci_low"][n], s["ci_high"][n]) for n in ns])
                cells = [f"{m:.4f} ({e[0]:+.2f} [{e[1]:+.2f}, {e[2]:+.2f}])"
                         for m, e in zip(row["mse_mean"], row["excess_across_seeds"])]
                lines.append(f"| model, {name} ({len(row['per_seed'])} seeds) | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", type=Path, help="a sweep directory, or run directories")
    p.add_argument("--sequences", type=int, default=20000)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--positions", type=lambda v: [int(n) for n in v.split(",")], default=None,
                   help="numbers of in-context pairs n to tabulate, e.g. 0,1,2,5,10,19 (default: d, 2d, N−1)")
    a = p.parse_args(argv)
    from selectlens.errors import SelectLensError

    try:
        runs = _runs(a.paths)
        if not runs:
            raise SelectLensError("no finished raw runs to evaluate")
        with torch.no_grad():
            result = cross_evaluate(runs, a.sequences, a.positions)
    except (SelectLensError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(markdown(result))
    if a.json is not None:
        from selectlens.fileio import atomic_write

        atomic_write(a.json, json.dumps(result, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
