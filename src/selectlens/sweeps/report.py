"""The sweep report: one self-contained offline HTML page (inline PNGs, no scripts, no network).

For each metric (the model's MSE and its gap to every honest baseline) and
each swept key: the mean across seeds against the key's values, one line per
combination of the other keys, with the 95% t-interval across seeds as a band.
Tables list every trial (missing ones marked) and the grouped means. Every
string that comes from the user (keys, values, trial names, error lines) is
HTML-escaped. Works on a partially finished sweep.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

from selectlens.fileio import atomic_write
from selectlens.interpret.page import page, png
from selectlens.rundir import read_jsonl
from selectlens.sweeps.asha import full_task_values
from selectlens.sweeps.trial import trial_dir
from selectlens.sweeps.aggregate import collect, group_rows, group_table, shown_baselines, t_interval, trial_table

CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}.missing{color:#b00}.fig{margin:1em 0}img{max-width:100%}"""


def _positions(values: list[Any]) -> tuple[list[float], list[str], bool]:
    """x positions of a key's values: the numbers themselves if all are numeric, else 0..n−1."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numeric:
        return [float(v) for v in values], [f"{v:g}" for v in values], True
    return list(range(len(values))), [str(v) for v in values], False


def metric_figure(groups: list[dict[str, Any]], keys: list[str], key: str, metric: str, label: str):
    """``metric`` (mean across seeds, t-interval band) against ``key``; one line per setting of the other keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted({g[key] for g in groups}, key=lambda v: (isinstance(v, str), v))
    xs, ticks, numeric = _positions(values)
    others = [k for k in keys if k != key]
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for g in groups:
        lines.setdefault(tuple(g[k] for k in others), []).append(g)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, (setting, gs) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
        gs = sorted(gs, key=lambda g: values.index(g[key]))
        x = [xs[values.index(g[key])] for g in gs]
        y = [g[metric] for g in gs]
        lo = [g[f"{metric}_t_low"] for g in gs]
        hi = [g[f"{metric}_t_high"] for g in gs]
        name = ", ".join(f"{k}={v}" for k, v in zip(others, setting)) or "mean across seeds"
        color = plt.get_cmap("tab10")(i % 10)
        ax.plot(x, y, "o-", color=color, label=name)
        ax.fill_between(x, [v if math.isfinite(v) else math.nan for v in lo],
                        [v if math.isfinite(v) else math.nan for v in hi], color=color, alpha=0.2)
    if metric.endswith("_gap"):
        ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(xs, ticks)
    if numeric and len(xs) > 2 and min(xs) > 0 and max(xs) / min(xs) > 20:
        ax.set_xscale("log")
        ax.set_xticks(xs, ticks)
    ax.set_xlabel(key)
    ax.set_ylabel(label)
    ax.set_title(f"{label} vs {key} (band: 95% t-interval across seeds)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def seed_figure(rows: list[dict[str, Any]], metric: str, label: str):
    """No grid: each seed's value and the mean with its t-interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if metric in r]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot([r["seed"] for r in done], [r[metric] for r in done], "o", color="tab:blue", label="per seed")
    m, lo, hi = t_interval([float(r[metric]) for r in done])
    if math.isfinite(m):
        ax.axhline(m, color="black", lw=1, label="mean")
    if math.isfinite(lo):
        ax.axhspan(lo, hi, color="gray", alpha=0.2, label="95% t-interval")
    if metric.endswith("_gap"):
        ax.axhline(0, color="black", lw=0.8, ls=":")
    ax.set_xlabel("seed")
    ax.set_ylabel(label)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def trial_curves(sweep_dir: Path, data: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Every trial's training curve from its ``metrics.jsonl`` (finished, stopped or running): sequences and
    the test loss, with the reference baseline's loss on the same split where the trial logs one, and a short
    label (the swept keys' last parts with their values, and the seed where there are several). A curriculum
    run's curve is on its full-size split (``full_size``), as ASHA judges it; where its records predate that
    split, on its curriculum point, and its label says so."""
    curves = {}
    for row in data["rows"]:
        path = trial_dir(sweep_dir, row["trial"]) / "metrics.jsonl"
        records = read_jsonl(path) if path.is_file() else []
        if records:
            split, at_point = zip(*map(full_task_values, records))
            ref = row.get("best_honest") or next((n for n in ("bayes_posterior_mixture", "dmmse", "context_validation_select")
                                                  if n in split[-1].get("baselines", {})), None)
            curves[row["trial"]] = {"sequences": [r["sequences"] for r in records], "test_loss": [r["test_loss"] for r in split],
                                    "status": row["status"],
                                    "label": curve_label(row, data["keys"], len(data["seeds"]) > 1) + (" (at its curriculum point)" if any(at_point) else ""),
                                    **({"reference": [r["baselines"].get(ref, math.nan) for r in split], "reference_name": ref}
                                       if ref else {})}
    return curves


def curve_label(row: dict[str, Any], keys: list[str], seeds: bool) -> str:
    """``layout=per_example, n_embd=128, …`` for a trial's row: each swept key by its last part."""
    parts = [f"{k.rsplit('.', 1)[-1]}={str(row[k]).replace(' ', '')}" for k in keys]
    return ", ".join(parts + ([f"seed={row['seed']}"] if seeds or not parts else []))


LABELLED = 10  # with more curves than this, the best ones at their last epoch are labelled, the others grey


def curves_figure(curves: dict[str, dict[str, Any]]):
    """Every trial's curve: the test loss relative to the reference's (``test / reference − 1``) against the
    training sequences, or the test loss where there is no reference; stopped trials dashed. With more than
    ``LABELLED`` trials the best ``LABELLED`` at their last epoch get colours and the legend, the rest thin grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    relative = all("reference" in c for c in curves.values())
    ys = {name: [t / r - 1 for t, r in zip(c["test_loss"], c["reference"])] if relative else c["test_loss"]
          for name, c in curves.items()}
    ranked = sorted(curves, key=lambda name: (math.isnan(ys[name][-1]), ys[name][-1]))
    shown = ranked[:LABELLED]
    fig, ax = plt.subplots(figsize=(9, 4.5 + 0.18 * len(shown)))
    cmap = plt.get_cmap("tab10")
    for name in ranked[LABELLED:]:
        ax.plot(curves[name]["sequences"], ys[name], "--" if curves[name]["status"] == "stopped" else "-", color="0.75", lw=0.8)
    for i, name in enumerate(shown):
        c = curves[name]
        ax.plot(c["sequences"], ys[name], "--" if c["status"] == "stopped" else "-", color=cmap(i % 10), lw=1.4,
                label=f"{c.get('label') or name} ({c['status']})")
    ax.set_xlabel("training sequences")
    ax.set_ylabel("test loss / reference − 1" if relative else "test loss")
    ax.set_yscale("log")
    rest = f"; the other {len(ranked) - len(shown)} grey" if len(ranked) > len(shown) else ""
    ax.set_title("Every trial's curve" + (f" against {next(iter(curves.values()))['reference_name']}" if relative else "")
                 + f" (dashed: stopped early by the scheduler{'; labelled: the best ' + str(len(shown)) + ' at their last epoch' + rest if rest else ''})",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)
    fig.tight_layout()
    return fig


def _table(rows: list[list[str]], head: list[str], missing_rows: set[int] = frozenset()) -> str:
    esc = html.escape
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for i, r in enumerate(rows):
        cls = " class='missing'" if i in missing_rows else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    return "".join(out) + "</table>"


def _rung_section(sweep_dir: Path) -> str:
    """Under ASHA: which trials reached which rung, with the metric the scheduler compared there."""
    from selectlens.sweeps.asha import rung_table
    from selectlens.sweeps.store import read_sweep

    if not read_sweep(sweep_dir)[0].asha:
        return ""
    head, rows, line = rung_table(sweep_dir)
    return (f"<section id='rungs'><h2>ASHA's rungs: the metric each trial had when it reached each rung</h2>"
            f"<p>{html.escape(line)}.</p>{_table(rows, head)}</section>")


def render_sweep_html(sweep_dir: Path, data: dict[str, Any], groups: list[dict[str, Any]], pngs: list[tuple[str, bytes]]) -> str:
    esc = html.escape
    head_t, rows_t = trial_table(data)
    head_g, rows_g = group_table(data, groups)
    missing = {i for i, r in enumerate(data["rows"]) if "model_mse" not in r}
    n_done = len(data["rows"]) - len(missing)
    figs = "".join(
        f"<div class='fig'><img alt='{esc(title)}' src='data:image/png;base64,{base64.b64encode(data_png).decode()}'></div>"
        for title, data_png in pngs)
    return page(f"SelectLens sweep: {sweep_dir.name}", f"""<h1>Sweep {esc(sweep_dir.name)}</h1>
<p id="status">{n_done} of {len(data['rows'])} trials finished{f"; {len(missing)} missing (marked in red)" if missing else ""}.
Swept keys: {esc(', '.join(data['keys']) or '(seeds only)')}; seeds {esc(', '.join(map(str, data['seeds'])))}.
Gap = baseline − model on the same held-out sequences (positive: the model is better).</p>
<section id="plots"><h2>Metrics against each swept key</h2>{figs or '<p>No finished trial yet.</p>'}</section>
<section id="grouped"><h2>Per grid point: mean across seeds [95% t-interval]</h2>{_table(rows_g, head_g)}</section>
{_rung_section(sweep_dir)}
<section id="trials"><h2>Trials (paired 95% CIs)</h2>{_table(rows_t, head_t, missing)}</section>""", style=CSS)


def write_sweep_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the sweep's ``report.html`` (or ``out``); returns its path."""
    sweep_dir = Path(sweep_dir)
    data = collect(sweep_dir)
    groups = group_rows(data)
    metrics = [("model_mse", "model MSE")] + [(f"{b}_gap", f"{b} − model") for b in shown_baselines(data)]
    pngs: list[tuple[str, bytes]] = []
    if any("model_mse" in r for r in data["rows"]):
        for metric, label in metrics:
            if data["keys"]:
                for key in data["keys"]:
                    pngs.append((f"{label} vs {key}", png(metric_figure(groups, data["keys"], key, metric, label))))
            else:
                pngs.append((f"{label} per seed", png(seed_figure(data["rows"], metric, label))))
    curves = trial_curves(sweep_dir, data)
    if curves:
        pngs.append(("every trial's training curve", png(curves_figure(curves))))
    path = Path(out) if out is not None else sweep_dir / "report.html"
    atomic_write(path, render_sweep_html(sweep_dir, data, groups, pngs).encode())
    return path
