"""Results across trials: one row per trial, and per grid point the mean across seeds with a t-interval.

Per trial (from its ``eval.json``): the model's held-out MSE with its CI, every
baseline's MSE, and the paired gap ``baseline − model`` with its paired CI
(positive: the model is better). Per grid point: for each of those numbers the
mean over the seeds that finished and the 95% Student-t interval across seeds,
``mean ± t_{0.975, n−1}·sd/√n`` — the seeds are the replicates, so this
interval covers training-to-training variation, which the per-trial CIs do not.
Unfinished trials are listed as missing; groups use the seeds that finished.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from selectlens.fileio import atomic_write
from selectlens.sweeps.store import read_sweep
from selectlens.sweeps.trial import read_status, trial_dir

REFERENCE_BASELINES = ("context_validation_select", "bayes_posterior_mixture")  # shown first


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: the 95% Student-t interval of the mean across replicates (nan for n < 2)."""
    from scipy.stats import t

    n = len(values)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def trial_metrics(eval_result: dict[str, Any]) -> dict[str, float]:
    """Flat numbers of one ``eval.json``: ``model_mse`` (+ CI), ``<b>_mse``, ``<b>_gap`` (+ paired CI)."""
    preds = eval_result.get("predictors", {})
    out: dict[str, float] = {}
    model = preds.get("model", {})
    for key in ("mse", "ci_low", "ci_high"):
        if key in model:
            out[f"model_{key}"] = float(model[key])
    for name, e in preds.items():
        if name == "model" or "mse" not in e:
            continue
        out[f"{name}_mse"] = float(e["mse"])
        if "paired_diff" in e:
            out[f"{name}_gap"] = float(e["paired_diff"])
            out[f"{name}_gap_ci_low"], out[f"{name}_gap_ci_high"] = (float(v) for v in e["paired_diff_ci"])
    return out


def collect(sweep_dir: Path) -> dict[str, Any]:
    """Every trial's status and metrics, plus the grid keys and baseline names (works on partial sweeps)."""
    spec, trials = read_sweep(sweep_dir)
    rows, baselines, not_honest = [], [], set()
    for t in trials:
        status = read_status(sweep_dir, t.name)
        row: dict[str, Any] = {"trial": t.name, **{k: _cell(v) for k, v in t.point.items()}, "seed": t.seed,
                               "status": status.get("status", "pending"), "error": status.get("error") or ""}
        path = trial_dir(sweep_dir, t.name) / "eval.json"
        if row["status"] == "done" and path.is_file():
            ev = json.loads(path.read_text(encoding="utf-8"))
            row.update(trial_metrics(ev))
            best = ev.get("reference")
            if best:
                row["best_honest"] = best
            for name, e in ev.get("predictors", {}).items():
                if name != "model" and name not in baselines:
                    baselines.append(name)
                if e.get("sees", "honest") != "honest":
                    not_honest.add(name)
        elif row["status"] == "done":
            row["status"] = "done (no eval)"
        rows.append(row)
    return {"keys": list(spec.grid), "seeds": list(spec.seeds), "rows": rows, "baselines": baselines,
            "not_honest": sorted(not_honest), "stages": list(spec.stages)}


def _cell(v: Any) -> Any:
    return v if isinstance(v, (int, float, str, bool)) else json.dumps(v)


def group_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per grid point: seeds finished, missing trials, and mean/t-interval of every metric across seeds."""
    keys = data["keys"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in data["rows"]:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    metrics = ["model_mse"] + [f"{b}_mse" for b in data["baselines"]] + [f"{b}_gap" for b in data["baselines"]]
    out = []
    for point, rows in groups.items():
        finished = [r for r in rows if "model_mse" in r]
        g: dict[str, Any] = dict(zip(keys, point))
        g["n"] = len(finished)
        g["missing"] = [r["trial"] for r in rows if "model_mse" not in r]
        for m in metrics:
            vals = [float(r[m]) for r in finished if m in r]
            g[m], g[f"{m}_t_low"], g[f"{m}_t_high"] = t_interval(vals)
        out.append(g)
    return out


def write_summary(sweep_dir: str | Path) -> dict[str, Path]:
    """Write ``summary.csv`` (one row per trial) and ``summary.md`` (per-trial and grouped tables)."""
    sweep_dir = Path(sweep_dir)
    data = collect(sweep_dir)
    groups = group_rows(data)
    paths = {"csv": sweep_dir / "summary.csv", "grouped_csv": sweep_dir / "summary_grouped.csv",
             "md": sweep_dir / "summary.md"}
    atomic_write(paths["csv"], _csv(data["rows"]).encode())
    atomic_write(paths["grouped_csv"], _csv([{**g, "missing": " ".join(g["missing"])} for g in groups]).encode())
    atomic_write(paths["md"], summary_markdown(data, groups).encode())
    return paths


def _csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: _fmt_csv(r.get(c, "")) for c in columns})
    return buf.getvalue()


def _fmt_csv(v: Any) -> Any:
    return "" if isinstance(v, float) and math.isnan(v) else v


def shown_baselines(data: dict[str, Any]) -> list[str]:
    """Baselines given a column in the Markdown tables and plots (``summary.csv`` has all of them):
    context-validation selection, each trial's best honest baseline (chosen on training data by eval),
    and the Bayes mixture of raw-data runs; else every honest one."""
    best = [r["best_honest"] for r in data["rows"] if r.get("best_honest")]
    wanted = [REFERENCE_BASELINES[0], *dict.fromkeys(best), REFERENCE_BASELINES[1]]
    names = [b for b in dict.fromkeys(wanted) if b in data["baselines"]]
    return names or [b for b in data["baselines"] if b not in data["not_honest"] and not b.startswith("candidate[")]


def _num(v: float) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.5f}"


def _ci(lo: float, hi: float, signed: bool = False) -> str:
    if any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return "(n<2)"
    f = "{:+.5f}" if signed else "{:.5f}"
    return f"[{f.format(lo)}, {f.format(hi)}]"


def trial_table(data: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the per-trial table (model MSE with its CI, gaps with paired CIs)."""
    keys, shown = data["keys"], shown_baselines(data)
    head = ["trial"] + keys + ["seed", "status", "model MSE [95% CI]"] + [f"gap to {b} [paired 95% CI]" for b in shown]
    rows = []
    for r in data["rows"]:
        cells = [r["trial"]] + [str(r[k]) for k in keys] + [str(r["seed"]), _status_text(r)]
        if "model_mse" in r:
            cells.append(f"{_num(r['model_mse'])} {_ci(r['model_ci_low'], r['model_ci_high'])}")
            cells += [f"{r[f'{b}_gap']:+.5f} {_ci(r[f'{b}_gap_ci_low'], r[f'{b}_gap_ci_high'], True)}"
                      if f"{b}_gap" in r else "—" for b in shown]
        else:
            cells += ["missing"] + ["—"] * len(shown)
        rows.append(cells)
    return head, rows


def group_table(data: dict[str, Any], groups: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the grouped table (means across seeds with t-intervals, missing trials)."""
    keys, shown = data["keys"], shown_baselines(data)
    head = keys + ["seeds", "model MSE"] + [f"gap to {b}" for b in shown] + ["missing"]
    rows = []
    for g in groups:
        cells = [str(g[k]) for k in keys] + [str(g["n"])]
        cells.append(f"{_num(g['model_mse'])} {_ci(g['model_mse_t_low'], g['model_mse_t_high'])}")
        cells += [f"{_num(g.get(f'{b}_gap', math.nan))} {_ci(g.get(f'{b}_gap_t_low', math.nan), g.get(f'{b}_gap_t_high', math.nan), True)}"
                  for b in shown]
        cells.append(", ".join(g["missing"]) or "—")
        rows.append(cells)
    return head, rows


def _md(head: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in r] for r in [head] + rows]
    return ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in esc[1:]]


def summary_markdown(data: dict[str, Any], groups: list[dict[str, Any]]) -> str:
    """Per-trial table with paired CIs, then the grouped table with across-seed t-intervals."""
    lines = ["# Sweep summary", "",
             "Gap = baseline − model on the same held-out sequences (positive: the model is better).", "",
             "## Trials", "", *_md(*trial_table(data)), "",
             "## Per grid point: mean across seeds [95% t-interval across seeds]", "",
             *_md(*group_table(data, groups))]
    return "\n".join(lines) + "\n"


def _status_text(row: dict[str, Any]) -> str:
    return row["status"] + (f": {row['error']}" if row.get("error") else "")
