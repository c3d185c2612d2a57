"""The report of a raw-data (interleaved) run: ``selectlens interpret`` / ``run`` pick it for
``mixed_noise_regression`` and ``linear_or_logistic`` runs.

Sections: training curves; error vs context length per σ / task type against every baseline
(``evaluate.context_length``); algorithm agreement (``interpret.agreement``); attention with
x / y query roles — the four role blocks beside uniform causal attention, and the
cluster analysis (content / position / both, beside majority and permutation nulls) for every
head and role; probes at every layer and x position (w, σ, the Bayes posterior weights, the
least-squares estimate), each beside a shuffled-label null; activation patching between
sequences that differ only in σ.

Escaping as in ``report.py``: every string from the config is HTML-escaped; the only JSON in the
page is inside a ``<script type="application/json">`` block with ``<``, ``>``, ``&`` escaped.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from selectlens.evaluate.context_length import context_length_figure
from selectlens.evaluate.runner import evaluate_model, heldout_batch, plot_training_curves
from selectlens.fileio import atomic_write
from selectlens.interpret import plots
from selectlens.interpret.agreement import agreement_figure, algorithm_agreement
from selectlens.interpret.attention import analyze_attention, attention_patterns
from selectlens.interpret.raw_analyses import (
    ROLE_BLOCKS, RawProbe, interleaved_content_features, paired_sigma_batches, raw_activation_patching, raw_probes,
    role_blocks,
)
from selectlens.interpret.report import PATCH_STREAM, _img, _png, _script_json, write_figures_and_numbers
from selectlens.rundir import read_jsonl
from selectlens.tasks.generators import make_generator, make_task, stream_seed


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"  interpret: {msg}", flush=True)


def interpret_raw_run(run: Path, out: Path, model, cfg, *, sequences: int = 512, device: str = "cpu",
                      progress: bool = False, attention_samples: int = 64) -> dict[str, Path]:
    """Every raw-run analysis on ``model`` (loaded from ``run``); writes PNGs, ``interpret.json`` and
    ``report.html`` into ``out`` and returns the written paths."""
    task = make_task(cfg, device=device)
    batch = heldout_batch(cfg, sequences, device)
    batch = batch.to(device)
    pngs: dict[str, bytes] = {}
    numbers: dict[str, Any] = {"run": str(run), "sequences": sequences, "task": cfg.data.task_name, "layout": "interleaved"}

    _say(progress, "training curves and evaluation over context length")
    numbers["eval"] = _evaluation(run, model, cfg, device, pngs)
    _say(progress, "algorithm agreement")
    agreement = algorithm_agreement(model, task, batch)
    numbers["agreement"] = agreement
    pngs["agreement"] = _png(agreement_figure(agreement))
    _say(progress, "attention: role blocks and clusters, every head")
    numbers["attention"] = _attention(model, batch, cfg, attention_samples, pngs)
    _say(progress, "probes at every layer and x position")
    probes = raw_probes(model, batch, list(cfg.data.noise_levels), list(cfg.data.noise_weights), seed=cfg.seed)
    numbers["probes"] = {p.name: _probe_numbers(p) for p in probes}
    pngs["probes"] = _png(probe_grid_figure(probes))
    if len(cfg.data.noise_levels) > 1:
        _say(progress, "activation patching between sequences that differ only in σ")
        numbers["patching"] = _patching(model, task, cfg, min(sequences, 256), device, pngs)
    return _write(out, cfg, pngs, numbers)


def _evaluation(run: Path, model, cfg, device: str, pngs: dict[str, bytes]) -> dict[str, Any]:
    """The run's ``eval.json`` (computed if absent), its context-length figure and the training curves."""
    eval_path = run / "eval.json"
    ev = json.loads(eval_path.read_text()) if eval_path.exists() else None
    if not ev or ev.get("layout") != "interleaved":
        ev = evaluate_model(model, cfg, device=device)
    pngs["context_length"] = _png(context_length_figure(ev))
    metrics = read_jsonl(run / "metrics.jsonl")
    if metrics:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = plot_training_curves(metrics, Path(tmp) / "curves.png", eval_result=ev)
            pngs["training_curves"] = path.read_bytes()
    return ev


def _attention(model, batch, cfg, samples: int, pngs: dict[str, bytes]) -> dict[str, Any]:
    """Role blocks (x→x, x→y, y→x, y→y) per head beside the uniform-causal null, and the cluster
    analysis of every head for x and y queries."""
    dtype = next(model.parameters()).dtype
    tokens = batch.tokens[:samples].to(dtype)
    pats = attention_patterns(model, tokens).cpu()  # [L, S, H, T, T]
    pngs["attention_grid"] = _png(plots.attention_grid(pats[:, :4].numpy(), 0))
    blocks = role_blocks(pats)
    pngs["role_blocks"] = _png(plots.effects_figure({b: blocks[b] - blocks[f"null[{b}]"] for b in ROLE_BLOCKS},
                                                    xlabel="head"))
    names = [f"x{j}" for j in range(cfg.data.d_d)] + ["y"]
    heads = []
    for l in range(model.spec.n_layer):
        for h in range(model.spec.n_head):
            a = analyze_attention(model, tokens, l, h, samples=samples, layout="interleaved", feature_names=names,
                                  features=interleaved_content_features, seed=cfg.seed)
            heads.append({"layer": l, "head": h, "roles": {
                role: {"k": r.k, "carried_by": r.carried_by, "test_sequences": len(r.test_samples),
                       "content_gain": r.content_gain, "scores": {n: vars(s) for n, s in r.scores.items()}}
                for role, r in a.roles.items()}})
    return {"role_blocks": blocks, "heads": heads, "samples": int(tokens.shape[0]),
            "patterns_shown": pats[:, :4].numpy()}


def _probe_title(p: RawProbe) -> str:
    return f"{p.name} ({'R²' if p.metric == 'r2' else 'accuracy'})"


def probe_grid_figure(probes: list[RawProbe]):
    """One heatmap per probe, ``[layer, x position]``: R² on [0, 1] (negative shown as 0), accuracy from
    the majority rate to 1; blank cells have no defined score (a target constant across sequences)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(probes), figsize=(3.6 * len(probes), 2.9), squeeze=False)
    for ax, p in zip(axes[0], probes):
        lo = p.chance if p.metric == "accuracy" else 0.0
        im = ax.imshow(np.clip(p.scores, lo, 1.0), aspect="auto", cmap="viridis", vmin=lo, vmax=1.0)
        ax.set_yticks(range(p.scores.shape[0]))
        ax.set_title(f"{_probe_title(p)}; null ≤ {np.nanmax(p.null):.2f}", fontsize=8)
        ax.set_xlabel("x position n (pairs seen)")
        ax.set_ylabel("layer (0 = embedding)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def _probe_numbers(p: RawProbe) -> dict[str, Any]:
    best, layer, n = p.best()
    return {"metric": p.metric, "chance": p.chance, "scores": p.scores, "null": p.null, "best": best, "best_ci": p.best_ci,
            "best_at": [layer, n], "null_at_best": float(p.null[layer, n]), "null_max": float(np.nanmax(p.null)),
            "last_position_by_layer": p.scores[:, -1], "per_column": p.per_column}


def _patching(model, task, cfg, n: int, device: str, pngs: dict[str, bytes]) -> dict[str, Any]:
    lo, hi = min(cfg.data.noise_levels), max(cfg.data.noise_levels)
    gen = make_generator(stream_seed(cfg.seed, PATCH_STREAM), device)
    clean, corrupt = paired_sigma_batches(task, n, gen, lo, hi)
    dtype = next(model.parameters()).dtype
    clean.tokens, corrupt.tokens = clean.tokens.to(dtype), corrupt.tokens.to(dtype)
    res = raw_activation_patching(model, clean, corrupt)
    pngs["patching"] = _png(plots.effects_figure({"resid_pre patched (effect, 1 = clean)": res["resid_output"]},
                                                 xlabel="position (x-token i at 2i)"))
    pngs["patching_heads"] = _png(plots.effects_figure({"head z patched (effect)": res["head_output"]}, xlabel="head"))
    return {"sigma_clean": lo, "sigma_corrupt": hi, "sequences": n, **res}


def _write(out: Path, cfg, pngs: dict[str, bytes], numbers: dict[str, Any]) -> dict[str, Path]:
    paths = write_figures_and_numbers(out, pngs, numbers)
    paths["html"] = out / "report.html"
    atomic_write(paths["html"], render_raw_html(cfg, pngs, numbers).encode())
    return paths


# ---------------------------------------------------------------------------
# HTML


def _ci(c: dict[str, list[float]], n: int, fmt: str) -> str:
    return f"{c['mean'][n]:{fmt}} [{c['ci_low'][n]:{fmt}}, {c['ci_high'][n]:{fmt}}]"


def _eval_table(ev: dict[str, Any]) -> str:
    """Per group: each predictor's error at n = d, 2d, N−1, then (model − Bayes) and the excess-risk ratio."""
    esc, ns = html.escape, ev["table_positions"]
    head = "".join(f"<th>n = {n}</th>" for n in ns)
    parts = []
    for g, res in ev["groups"].items():
        rows = [f"<tr><td>{esc(name)}</td><td>{esc(ev['predictors'][name]['sees'])}</td>"
                + "".join(f"<td>{_ci(e['mse'], n, '.4f')}</td>" for n in ns) + "</tr>" for name, e in res["predictors"].items()]
        if "excess_risk_ratio" in res:
            rows.append("<tr class='ref'><td>model − Bayes mixture (paired)</td><td></td>"
                        + "".join(f"<td>{_ci(res['model_minus_reference'], n, '+.4f')}</td>" for n in ns) + "</tr>")
            rows.append("<tr class='ref'><td>(model − Bayes)/Bayes</td><td></td>"
                        + "".join(f"<td>{_ci(res['excess_risk_ratio'], n, '+.3f')}</td>" for n in ns) + "</tr>")
        parts.append(f"<h3>{esc(g)} ({res['sequences']} sequences)</h3><table><tr><th>predictor</th><th>sees</th>{head}</tr>"
                     + "".join(rows) + "</table>")
    return "".join(parts)


def _agreement_table(agreement: dict[str, Any], ns: list[int]) -> str:
    esc = html.escape
    rows = []
    for g, res in agreement["groups"].items():
        closest = " / ".join(esc(res["closest"][n]) for n in ns)
        rows.append(f"<tr><td>{esc(g)}</td><td>{closest}</td>"
                    + "".join(f"<td>{esc(name)}: " + " / ".join(f"{c['mean'][n]:.4f}" for n in ns) + "</td>"
                              for name, c in res["distance"].items() if name in ("bayes_posterior_mixture", "least_squares"))
                    + "</tr>")
    return ("<table><tr><th>group</th><th>closest baseline at n = " + " / ".join(map(str, ns))
            + "</th><th colspan='2'>mean (model − baseline)² at those n</th></tr>" + "".join(rows) + "</table>")


def _role_block_table(blocks: dict[str, Any]) -> str:
    L, H = np.asarray(blocks["x→x"]).shape

    def cell(b: str, l: int, h: int) -> str:
        lo, hi = np.asarray(blocks[f"ci[{b}]"])[:, l, h]
        return f"<td>{float(np.asarray(blocks[b])[l, h]):.3f} [{lo:.3f}, {hi:.3f}]</td>"

    head = "".join(f"<th>{b} [95% CI] (null {float(blocks[f'null[{b}]']):.3f})</th>" for b in ROLE_BLOCKS)
    rows = "".join(f"<tr><td>L{l}H{h}</td>" + "".join(cell(b, l, h) for b in ROLE_BLOCKS) + "</tr>"
                   for l in range(L) for h in range(H))
    return f"<table><tr><th>head</th>{head}</tr>{rows}</table>"


def _cluster_table(heads: list[dict[str, Any]]) -> str:
    def acc(s: dict) -> str:
        return f"{s['accuracy']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]{'' if s['above_null'] else ' (n.s.)'}"

    rows = []
    for r in heads:
        for role, a in r["roles"].items():
            s = a["scores"]
            perm = " / ".join(format(s[n]["permutation"], ".3f") for n in ("content", "position", "both"))
            rows.append(f"<tr><td>L{r['layer']}H{r['head']}</td><td>{html.escape(role)}</td><td>{a['k']}</td>"
                        f"<td>{acc(s['content'])}</td><td>{acc(s['position'])}</td><td>{acc(s['both'])}</td>"
                        f"<td>{s['content']['majority']:.3f}</td><td>{perm}</td><td>{html.escape(a['carried_by'])}</td></tr>")
    return ("<table><tr><th>head</th><th>queries</th><th>k</th><th>content only</th><th>position only</th><th>both</th>"
            "<th>majority</th><th>permuted labels (content / position / both)</th><th>carried by</th></tr>"
            + "".join(rows) + "</table>")


def _probe_table(probes: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v['metric']}</td><td>{v['best']:.3f} [{v['best_ci'][0]:.3f}, {v['best_ci'][1]:.3f}]</td>"
        f"<td>layer {v['best_at'][0]}, n = {v['best_at'][1]}</td><td>{v['null_at_best']:.3f}</td><td>{v['null_max']:.3f}</td>"
        f"<td>{v['chance']:.3f}</td><td>{' / '.join('—' if not np.isfinite(x) else f'{x:.3f}' for x in v['last_position_by_layer'])}</td></tr>"
        for k, v in probes.items())
    return ("<table><tr><th>probe</th><th>metric</th><th>best [95% bootstrap CI over held-out sequences]</th><th>where</th><th>null (shuffled labels) there</th>"
            "<th>null, max over cells</th><th>majority rate</th><th>last x position, by layer (0 = embedding)</th></tr>"
            + rows + "</table>")


def _patching_html(numbers: dict[str, Any], pngs: dict[str, bytes]) -> str:
    if "patching" not in numbers:
        return "<p>One noise level only: no σ pairs to patch.</p>"
    p = numbers["patching"]
    return (f"<p>{p['sequences']} pairs of sequences with the same w, x and z: clean σ = {p['sigma_clean']:g}, corrupted "
            f"σ = {p['sigma_corrupt']:g}. Effect on the prediction at the last x-token (0 = corrupted, 1 = clean). "
            f"Squared error there: clean {float(p['clean_loss']):.4f}, corrupted {float(p['corrupt_loss']):.4f}; "
            f"mean |clean − corrupted| prediction gap {float(p['gap']):.4f}.</p>"
            + _img(pngs, "patching", "residual patching") + _img(pngs, "patching_heads", "head patching"))


STYLE = """body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.8em; }
td, th { border: 1px solid #ccc; padding: 3px 7px; text-align: left; } tr.ref td { background: #f3f3f8; }
img { max-width: 100%; } section { margin-bottom: 2em; }"""


def render_raw_html(cfg, pngs: dict[str, bytes], numbers: dict[str, Any]) -> str:
    """The self-contained report page of a raw-data run."""
    esc = html.escape
    name = cfg.wandb.name or Path(cfg.out_dir).name
    ev, att = numbers["eval"], numbers["attention"]
    config_rows = "".join(f"<tr><td>{esc(k)}</td><td><code>{esc(json.dumps(v))}</code></td></tr>" for k, v in cfg.to_dict().items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>SelectLens report: {esc(name)}</title><style>{STYLE}</style></head><body>
<h1>SelectLens report: <span id="run-name">{esc(name)}</span></h1>
<p id="run-notes">{esc(cfg.wandb.notes or "")}</p>
<p>{esc(cfg.data.task_name)} task, interleaved layout: d = {cfg.data.d_d}, N = {cfg.data.N} pairs, σ ∈ {esc(str(cfg.data.noise_levels))};
{numbers['sequences']} held-out sequences for the analyses.</p>
<section id="training"><h2>Training</h2>{_img(pngs, 'training_curves', 'training curves')}</section>
<section id="eval"><h2>Error vs context length ({ev['sequences']} held-out sequences)</h2>
<p>Squared error of the prediction of y_n from n pairs, mean [95% CI]; the reference is the exact Bayes posterior
mixture over the noise levels. "latent" predictors see the sequence's σ or type, which the model does not.</p>
{_img(pngs, 'context_length', 'error vs context length')}{_eval_table(ev)}</section>
<section id="agreement"><h2>Algorithm agreement</h2>
<p>Mean squared distance between the model's predictions and each baseline's, per n (not against the target).</p>
{_agreement_table(numbers['agreement'], ev['table_positions'])}{_img(pngs, 'agreement', 'algorithm agreement')}</section>
<section id="attention"><h2>Attention: x and y queries</h2>
<p>Attention mass from x-queries (even positions) and y-queries (odd) to x- and y-keys, averaged over
{att['samples']} sequences, beside the null of uniform attention over the visible keys (what the causal mask alone gives).
The figure shows each block minus its null.</p>
{_role_block_table(att['role_blocks'])}{_img(pngs, 'role_blocks', 'role blocks')}
<p>Clusters of attention rows per head and query role; a LinearSVC trained on some sequences predicts them on others from
the query token's content (x, y, ‖x‖, |y|), its position, or both, beside the majority rate and a label-permutation null.</p>
{_cluster_table(att['heads'])}{_img(pngs, 'attention_grid', 'attention grid')}</section>
<section id="probes"><h2>Linear probes at every layer and x position</h2>
<p>Ridge (R²) or logistic (accuracy) probes from the residual stream at x-token n, trained on 3/4 of the sequences and
scored on the rest; the null is the same probe trained on shuffled labels. Layer 0 is the embedding.</p>
{_probe_table(numbers['probes'])}{_img(pngs, 'probes', 'probes')}</section>
<section id="patching"><h2>Activation patching between σ levels</h2>{_patching_html(numbers, pngs)}</section>
<section id="config"><h2>Config</h2><table>{config_rows}</table></section>
<script type="application/json" id="report-numbers">{_script_json({"task": numbers["task"], "probes": {k: {"best": v["best"], "best_at": v["best_at"]} for k, v in numbers["probes"].items()}})}</script>
</body></html>
"""
