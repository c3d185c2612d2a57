"""``selectlens interpret``: every analysis on a run, as PNGs, one JSON of numbers, and a
self-contained ``report.html`` (no network access, works from ``file://``).

One builder for every task family: the page frame, the training curves, the evaluation (one
table per metric; the error over context length where the model predicts at several
positions) and the config are common; the analyses are the family's own sections, named by its
``analyses`` (see :data:`SECTIONS`). Escaping: see :mod:`selectlens.interpret.page`.
"""

from __future__ import annotations

import dataclasses
import html
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

from selectlens.baselines import BaselineSuite, suite_for
from selectlens.evaluate.context_length import context_length_figure
from selectlens.evaluate.runner import evaluate_model, fit_summary, gap_closed_text, heldout_batch, plot_training_curves
from selectlens.fileio import atomic_write
from selectlens.interpret.page import config_table, img, page, png, write_figures_and_numbers
from selectlens.interpret.selection_report import selection_sections
from selectlens.interpret.sequence_report import sequence_sections
from selectlens.rundir import load_run_model, read_jsonl
from selectlens.tasks.protocol import TaskFamily, make_task

#: Report sections by name: a family lists the ones it has in its ``analyses``.
SECTIONS: dict[str, Callable[["ReportContext"], str]] = {
    "selection": selection_sections,
    "sequence": sequence_sections,
}


@dataclasses.dataclass
class ReportContext:
    """What every section reads (model, task, data, the evaluation) and fills (figures, numbers)."""

    run: Path
    out: Path
    model: Any
    cfg: Any
    task: TaskFamily
    suite: BaselineSuite
    batch: Any
    ev: dict[str, Any]
    device: str
    progress: bool
    sequences: int
    samples_shown: int = 4
    attention_samples: int = 64
    pngs: dict[str, bytes] = dataclasses.field(default_factory=dict)
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra_paths: dict[str, Path] = dataclasses.field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.task.loss

    @property
    def dtype(self):
        return next(self.model.parameters()).dtype

    def say(self, msg: str) -> None:
        if self.progress:
            print(f"  interpret: {msg}", flush=True)


def _evaluation(run: Path, model, cfg, device: str) -> dict[str, Any]:
    """The run's ``eval.json``, or a fresh evaluation where it is absent or from an older schema."""
    path = run / "eval.json"
    ev = json.loads(path.read_text()) if path.exists() else None
    if not ev or "positions" not in ev or "tables" not in ev:
        ev = evaluate_model(model, cfg, device=device)
    return ev


def _common_figures(ctx: ReportContext) -> None:
    metrics = read_jsonl(ctx.run / "metrics.jsonl")
    if metrics:
        with tempfile.TemporaryDirectory() as tmp:
            ctx.pngs["training_curves"] = plot_training_curves(metrics, Path(tmp) / "curves.png", eval_result=ctx.ev).read_bytes()
    if len(ctx.ev["positions"]) > 1:
        ctx.pngs["context_length"] = png(context_length_figure(ctx.ev))


def interpret_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    sequences: int = 512,
    samples_shown: int = 4,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Path]:
    """Run every analysis of the run's task family on its model and write the report; returns the written paths."""
    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run / "report"
    model, cfg = load_run_model(run, device=device)
    task = make_task(cfg, device=device)
    ctx = ReportContext(run, out, model, cfg, task, suite_for(task), heldout_batch(cfg, sequences, device).to(device),
                        {}, device, progress, sequences, samples_shown)
    ctx.say("training curves and evaluation")
    ctx.ev = _evaluation(run, model, cfg, device)
    ctx.numbers.update({"run": str(run), "sequences": sequences, "task": ctx.ev["task"], "layout": task.layout,
                        "eval": ctx.ev})
    _common_figures(ctx)
    bodies = [SECTIONS[name](ctx) for name in task.analyses if name in SECTIONS]
    out.mkdir(parents=True, exist_ok=True)
    paths = write_figures_and_numbers(out, ctx.pngs, ctx.numbers) | ctx.extra_paths
    paths["html"] = out / "report.html"
    atomic_write(paths["html"], render_html(ctx, "".join(bodies)).encode())
    return paths


def _ci(c: dict[str, list[float]], i: int, fmt: str) -> str:
    return f"{c['mean'][i]:{fmt}} [{c['ci_low'][i]:{fmt}}, {c['ci_high'][i]:{fmt}}]"


def eval_tables_html(ev: dict[str, Any]) -> str:
    """Every metric's table (each predictor with what it sees, its CI and the paired CI against the
    model), what was fitted and the gap closed; then, where there are several read-out positions,
    the error per group at the table positions with the model's paired excess over the reference."""
    esc = html.escape
    parts = []
    for t in ev["tables"].values():
        rows = []
        for name, e in t["predictors"].items():
            paired = "" if name == "model" else f"{e['paired_diff']:+.5f} [{e['paired_diff_ci'][0]:+.5f}, {e['paired_diff_ci'][1]:+.5f}]"
            rows.append(f"<tr><td>{esc(name)}</td><td>{esc(e['sees'])}</td><td>{e['mean']:.5f}</td>"
                        f"<td>[{e['ci_low']:.5f}, {e['ci_high']:.5f}]</td><td>{paired}</td></tr>")
        parts.append(f"<h3>{esc(t['metric_name'])}</h3><table><tr><th>predictor</th><th>sees</th><th>{esc(t['metric_name'])}</th>"
                     f"<th>95% CI</th><th>baseline − model (paired 95% CI)</th></tr>{''.join(rows)}</table>"
                     f"<p>{esc(fit_summary(t))}</p><p>{esc(gap_closed_text(t))}</p>")
    if len(ev["positions"]) > 1:
        parts.append(_curves_html(ev))
    return "".join(parts)


def _curves_html(ev: dict[str, Any]) -> str:
    esc, idx, metric = html.escape, ev["table_positions"], ev["metric"]
    head = "".join(f"<th>n = {ev['positions'][i]}</th>" for i in idx)
    parts = [f"<h3>Error over context length ({esc(ev['metric_name'])}, mean [95% CI])</h3>"]
    for g, res in ev["groups"].items():
        rows = [f"<tr><td>{esc(name)}</td><td>{esc(ev['predictors'][name]['sees'])}</td>"
                + "".join(f"<td>{_ci(e[metric], i, '.4f')}</td>" for i in idx) + "</tr>" for name, e in res["predictors"].items()]
        if "excess_risk_ratio" in res:
            ref = esc(ev["reference"])
            rows.append(f"<tr class='ref'><td>model − {ref} (paired)</td><td></td>"
                        + "".join(f"<td>{_ci(res['model_minus_reference'], i, '+.4f')}</td>" for i in idx) + "</tr>")
            rows.append(f"<tr class='ref'><td>(model − {ref})/{ref}</td><td></td>"
                        + "".join(f"<td>{_ci(res['excess_risk_ratio'], i, '+.3f')}</td>" for i in idx) + "</tr>")
        parts.append(f"<h4>{esc(g)} ({res['sequences']} sequences)</h4><table><tr><th>predictor</th><th>sees</th>{head}</tr>"
                     + "".join(rows) + "</table>")
    return "".join(parts)


def render_html(ctx: ReportContext, sections: str) -> str:
    """The page: header, findings and the family's sections, training, evaluation, config."""
    esc, cfg, ev = html.escape, ctx.cfg, ctx.ev
    name = cfg.wandb.name or Path(cfg.out_dir).name
    findings = ctx.numbers.get("findings")
    findings_html = "" if not findings else (
        "<section id='findings'><h2>Findings</h2><p>Generated from the numbers below; each links to its panel.</p><ul>"
        + "".join(f"<li>{esc(text)} <a href='#{anchor}'>[{anchor}]</a></li>" for text, anchor in findings) + "</ul></section>")
    body = f"""<h1>SelectLens report: <span id="run-name">{esc(name)}</span></h1>
<p id="run-notes">{esc(cfg.wandb.notes or "")}</p>
<p>{esc(ctx.task.describe())}; {ctx.sequences} held-out sequences for the analyses.</p>
{findings_html}
<section id="training"><h2>Training</h2>{img(ctx.pngs, 'training_curves', 'training curves')}</section>
<section id="eval"><h2>Evaluation ({ev['sequences']} held-out sequences)</h2>
{img(ctx.pngs, 'context_length', 'error vs context length') if 'context_length' in ctx.pngs else ''}{eval_tables_html(ev)}
<p>Sees: honest = only the tokens; latent = also a latent variable (α, σ, the type, x), which the model does not see;
oracle = the answer; bound = a reference no predictor of the tokens beats in expectation (not a competitor).</p></section>
{sections}
<section id="config"><h2>Config</h2><table>{config_table(cfg)}</table></section>"""
    return page(f"SelectLens report: {name}", body)
