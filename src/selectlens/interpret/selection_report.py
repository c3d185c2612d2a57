"""The report sections of the selection layout: the selection rule, attention and its clusters,
head ablation, α patching, probes, the logit lens, direct attribution and MLP neurons; findings
first. :func:`selection_sections` runs them on a :class:`~selectlens.interpret.report.ReportContext`
and returns their HTML."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np

from selectlens.evaluate.runner import heldout_batch
from selectlens.fileio import atomic_write
from selectlens.interpret import circuits, plots
from selectlens.interpret.attention import analyze_attention, attention_patterns, describe_analysis
from selectlens.interpret.findings import findings, hull_finding
from selectlens.interpret.page import img as _img, jsonable as _jsonable, png as _png, script_json as _script_json
from selectlens.interpret.selection_rule import analyze_selection_rule, selection_curve_figure
from selectlens.interpret.probes import run_probes
from selectlens.tasks.protocol import PATCH_STREAM, make_generator, stream_seed


def _feature_names(task) -> list[str]:
    return [f"cand[{c}]" for c in task.candidate_labels] + ["y"]


def _attention_views(ctx, samples_shown: int) -> np.ndarray:
    ctx.say("attention")
    pats = attention_patterns(ctx.model, ctx.batch.tokens[:samples_shown].to(ctx.dtype)).cpu().numpy()  # [L, S, H, T, T]
    ctx.pngs["attention_grid"] = _png(plots.attention_grid(pats, 0))
    for l in range(pats.shape[0]):
        for h in range(pats.shape[2]):
            ctx.pngs[f"attention_L{l}H{h}"] = _png(plots.attention_heatmap(pats[l, 0, h], f"layer {l}, head {h}, sample 0"))
    ctx.numbers["attention_patterns_shown"] = pats
    return pats


def _ablation_and_clusters(ctx) -> str:
    ctx.say("head ablation")
    ablation = circuits.head_ablation(ctx.model, ctx.batch, ctx.kind)
    ctx.numbers["ablation"] = ablation
    ctx.pngs["ablation"] = _png(plots.effects_figure(
        {"zero-ablation Δloss": ablation["zero_loss"], "mean-ablation Δloss": ablation["mean_loss"],
         "mean-ablation |Δprediction|": ablation["mean_output"]}, xlabel="head"))
    ctx.say("attention clusters: which features carry them, every head")
    heads, analysis = _attention_analyses(ctx.model, ctx.batch.tokens.to(ctx.dtype), ablation, _feature_names(ctx.task), ctx.cfg.seed)
    ctx.numbers["attention_heads"] = heads
    ctx.pngs["attention_clusters"] = _png(plots.attention_analysis_figure(analysis, 0))
    ctx.numbers["attention_analysis"] = _jsonable(analysis.roles) | {"layer": analysis.layer, "head": analysis.head,
                                                                     "samples": analysis.samples}
    return describe_analysis(analysis)


SELECTION_RULE_SEQUENCES = 4000


def _selection_rule(ctx, ev: dict) -> None:
    """Effective weights, hull, selection curve and agreement, with the baselines fitted by the primary metric."""
    ctx.say("selection rule")
    table = ev["tables"]["mse"]
    fit = ctx.suite.fit_from_checkpoint({"baseline_fit": table["fit"]}, table["metric"])
    batch = heldout_batch(ctx.cfg, max(SELECTION_RULE_SEQUENCES, len(ctx.batch)), ctx.device)
    pred = ctx.model.predict_in_chunks(batch.tokens.to(ctx.dtype))  # [B]: the last position
    rule = analyze_selection_rule(pred, batch, ctx.suite.predictors(fit), kind=fit.metric, temperature=fit.temperature,
                                  sees=ctx.suite.sees)
    ctx.numbers["selection_rule"] = _jsonable(rule)
    ctx.pngs["selection_curve"] = _png(selection_curve_figure(rule))


def _probes_lens_attribution(ctx) -> None:
    model, batch, kind, cfg = ctx.model, ctx.batch, ctx.kind, ctx.cfg
    ctx.say("probes")
    probes = run_probes(model, batch, kind, ctx.task.candidates, seed=cfg.seed)
    ctx.numbers["probes"] = {p.name: {"metric": p.metric, "chance": p.chance, "scores": p.scores,
                                      "best": float(p.scores.max()),
                                      "best_at": [int(i) for i in np.unravel_index(int(np.argmax(p.scores)), p.scores.shape)],
                                      "last_position_by_layer": p.scores[:, -1]} for p in probes}
    ctx.pngs["probes"] = _png(plots.probe_figure(probes))
    ctx.say("logit lens")
    lens = circuits.logit_lens(model, batch, kind)
    ctx.numbers["logit_lens_error"] = lens["error"]
    ctx.pngs["logit_lens"] = _png(plots.logit_lens_figure(lens["error"], kind))
    ctx.say("direct attribution")
    attr = circuits.direct_attribution(model, batch.tokens.to(ctx.dtype))
    ctx.numbers["attribution"] = {"components": attr.components, "mean": attr.values.mean(0),
                                  "mean_abs": np.abs(attr.values).mean(0),
                                  "max_reconstruction_error": float(np.abs(attr.values.sum(1) - attr.output).max())}
    ctx.pngs["attribution"] = _png(plots.attribution_figure(attr.components, attr.values))


def _patching_and_neurons(ctx, sequences: int) -> None:
    cfg, device = ctx.cfg, ctx.device
    gen = make_generator(stream_seed(cfg.seed, PATCH_STREAM), device)
    pair = ctx.task.paired_batches(min(sequences, 256), gen)
    if pair is not None and pair.clean_value != pair.corrupt_value:
        ctx.say(f"activation patching between sequences that differ only in {pair.latent}")
        patch = circuits.activation_patching(ctx.model, pair.clean, pair.corrupt, ctx.kind)
        ctx.numbers["patching"] = {"latent": pair.latent, "clean": pair.clean_value, "corrupt": pair.corrupt_value, **patch}
        ctx.pngs["patching"] = _png(plots.effects_figure(
            {"resid_pre patched (effect, 1 = clean)": patch["resid_output"]}, xlabel="position"))
        ctx.pngs["patching_heads"] = _png(plots.effects_figure(
            {"head z patched (effect)": patch["head_output"]}, xlabel="head"))
    ctx.say("MLP neurons")
    neurons = circuits.neuron_statistics(ctx.model, ctx.batch.tokens.to(ctx.dtype))
    ctx.numbers["neurons"] = neurons
    ctx.pngs["neurons"] = _png(plots.neuron_figure(neurons))


def selection_sections(ctx) -> str:
    """Every selection-layout analysis on ``ctx`` (figures into ``ctx.pngs``, numbers into ``ctx.numbers``); their HTML."""
    pats = _attention_views(ctx, ctx.samples_shown)
    cluster_text = _ablation_and_clusters(ctx)
    _selection_rule(ctx, ctx.ev)
    _probes_lens_attribution(ctx)
    _patching_and_neurons(ctx, ctx.sequences)
    ctx.numbers["findings"] = findings(ctx.ev, ctx.numbers)
    cv_path = _circuitsvis(pats[:, 0], ctx.out, _feature_names(ctx.task))
    if cv_path is not None:
        ctx.extra_paths["circuitsvis"] = cv_path
    return render_sections(ctx.numbers, ctx.pngs, cluster_text, cv_path)


def _attention_analyses(model, tokens, ablation: dict, feature_names: list[str], seed: int, samples: int = 128):
    """The three-feature-set attention analysis for every head (its table) and the full analysis of the head
    whose mean-ablation costs most (its clusters and figure)."""
    L, H = model.spec.n_layer, model.spec.n_head
    top = np.unravel_index(int(np.argmax(ablation["mean_loss"])), (L, H))
    rows, top_analysis = [], None
    for l in range(L):
        for h in range(H):
            a = analyze_attention(model, tokens, l, h, samples=samples, feature_names=feature_names, seed=seed)
            role = a.roles["query"]
            rows.append({"layer": l, "head": h, "k": role.k, "carried_by": role.carried_by,
                         "test_sequences": len(role.test_samples), "content_gain": role.content_gain,
                         "scores": {n: vars(sc) for n, sc in role.scores.items()}})
            if (l, h) == top:
                top_analysis = a
    return rows, top_analysis


def _circuitsvis(patterns: np.ndarray, out: Path, feature_names: list[str]) -> Path | None:
    """circuitsvis attention view (its offline ``local_src``) per layer, when the extra is installed."""
    try:
        from circuitsvis.attention import attention_patterns as cv_patterns
    except ImportError:
        return None
    T = patterns.shape[-1]
    parts = []
    for l in range(patterns.shape[0]):
        view = cv_patterns(tokens=[f"t{i}" for i in range(T)], attention=patterns[l])
        # circuitsvis opens with a self-closing <div .../>, which HTML does not honour: close it,
        # or each view swallows the ones after it.
        src = re.sub(r"^(\s*<div [^>]*?)\s*/>", r"\1></div>", view.local_src, count=1)
        parts.append(f"<section><h2>layer {l}</h2>\n{src}</section>")
    path = out / "attention_circuitsvis.html"
    atomic_write(path, ("<!doctype html><meta charset='utf-8'><title>attention (circuitsvis)</title>\n" + "\n".join(parts)).encode())
    return path


def _rule_html(numbers: dict, pngs: dict[str, bytes]) -> str:
    r = numbers.get("selection_rule")
    if not r:
        return ""
    esc = html.escape
    fmt = lambda v: f"{v[0]:.4g} [{v[1]:.4g}, {v[2]:.4g}]"  # noqa: E731
    alphas = list(next(iter(r["agreement"].values()))["per_alpha"])
    agree_rows = "".join(
        f"<tr><td>{esc(n)}</td><td>{esc(v['sees'])}</td><td>{fmt(v['all'])}</td>"
        + "".join(f"<td>{fmt(v['per_alpha'][a])}</td>" for a in alphas) + "</tr>"
        for n, v in sorted(r["agreement"].items(), key=lambda kv: kv[1]["all"][0]))
    weights = ", ".join(f"{'all' if k == 'all' else 'α=' + k}: {fmt(v)}" for k, v in r["weight_summary"].items())
    return f"""<section id="selection-rule"><h2>The model's selection rule</h2>
<p>Effective weight on candidate 1, a = (p − ŷ₂)/(ŷ₁ − ŷ₂), where |ŷ₁ − ŷ₂| &gt; {r['threshold']:g}
({100 * r['defined_share']:.1f}% of sequences): {esc(weights)}.
{esc(hull_finding(r))}</p>
{_img(pngs, 'selection_curve', 'selection curve')}</section>
<section id="agreement"><h2>Agreement with each rule</h2>
<p>Mean squared distance between the model's predictions and each predictor's (not the target), 95% CI; closest first.</p>
<table><tr><th>predictor</th><th>sees</th><th>all</th>{''.join(f'<th>α={esc(a)}</th>' for a in alphas)}</tr>{agree_rows}</table></section>"""


def _held_out_text(heads: list[dict]) -> str:
    counts = sorted({r["test_sequences"] for r in heads})
    return (f"{counts[0]} held-out sequences per head" if len(counts) == 1
            else f"{counts[0]}–{counts[-1]} held-out sequences per head") if counts else "no heads"


def _attention_rows(heads: list[dict]) -> str:
    def acc(s: dict) -> str:
        if s.get("all_majority"):
            return f"majority class for every row ({s['accuracy']:.3f})"
        mark = "" if s["above_null"] else " (n.s.)"
        return f"{s['accuracy']:.3f} [{s['ci'][0]:.3f}, {s['ci'][1]:.3f}]{mark}"

    return "".join(
        f"<tr><td>L{r['layer']}H{r['head']}</td><td>{r['k']}</td><td>{acc(r['scores']['content'])}</td>"
        f"<td>{acc(r['scores']['position'])}</td><td>{acc(r['scores']['both'])}</td>"
        f"<td>{r['scores']['content']['majority']:.3f}</td>"
        f"<td>{' / '.join(format(r['scores'][n]['permutation'], '.3f') for n in ('content', 'position', 'both'))}</td>"
        f"<td>{html.escape(r['carried_by'])}</td></tr>" for r in heads)


def render_sections(numbers: dict, pngs: dict[str, bytes], cluster_text: str, cv_path) -> str:
    """The HTML of the selection-layout sections (selection rule, attention, probes, …); the findings
    (``numbers["findings"]``) open the page, above training, in :func:`selectlens.interpret.report.render_html`."""
    esc = html.escape
    probe_rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{v['metric']}</td><td>{v['best']:.3f}</td><td>layer {v['best_at'][0]}, position {v['best_at'][1]}</td>"
        f"<td>{' / '.join(f'{x:.3f}' for x in v['last_position_by_layer'])}</td></tr>"
        for k, v in numbers["probes"].items())
    attr = numbers["attribution"]
    attr_rows = "".join(f"<tr><td>{esc(c)}</td><td>{m:+.4f}</td><td>{a:.4f}</td></tr>"
                        for c, m, a in zip(attr["components"], attr["mean"], attr["mean_abs"]))
    abl = numbers["ablation"]
    L, H = abl["mean_loss"].shape
    abl_rows = "".join(f"<tr><td>L{l}H{h}</td><td>{abl['zero_loss'][l, h]:+.5f}</td><td>{abl['mean_loss'][l, h]:+.5f}</td>"
                       f"<td>{abl['mean_output'][l, h]:.5f}</td></tr>" for l in range(L) for h in range(H))
    patch_html = ""
    if "patching" in numbers:
        p = numbers["patching"]
        patch_html = (f"<p>Clean {esc(p['latent'])} = {p['clean']:g}, corrupted {esc(p['latent'])} = {p['corrupt']:g} (same w, x and noise draws). "
                      f"Loss: clean {float(p['clean_loss']):.5f}, corrupted {float(p['corrupt_loss']):.5f}.</p>"
                      + _img(pngs, "patching", "residual patching") + _img(pngs, "patching_heads", "head patching"))
    options = "".join(f"<option value='{l},{h}'>layer {l}, head {h}</option>" for l in range(L) for h in range(H))
    S = numbers["attention_patterns_shown"].shape[1]
    sample_opts = "".join(f"<option value='{s}'>sample {s}</option>" for s in range(S))
    cv_link = f"<p><a href='{esc(cv_path.name)}'>circuitsvis attention view</a> (offline copy)</p>" if cv_path else ""
    return f"""{_rule_html(numbers, pngs)}
<section id="attention"><h2>Attention</h2>
<label>head <select id="head-select">{options}</select></label>
<label>sample <select id="sample-select">{sample_opts}</select></label>
<p id="attn-caption"></p><canvas id="attn-canvas" width="420" height="420"></canvas>
{cv_link}
{_img(pngs, 'attention_grid', 'attention grid')}</section>
<section id="clusters"><h2>Attention clusters</h2>
<p>Rows of each head's attention are clustered (KMeans, k by silhouette); a LinearSVC trained on some sequences predicts the
clusters on other sequences from the query token's content, its position, or both. Each accuracy is the mean over
held-out sequences with a Wilson 95% interval over sequences ({esc(_held_out_text(numbers['attention_heads']))}), shown
beside the majority-class rate and a label-permutation baseline (the null); a classifier that predicts the majority class
for every row is said so instead of given an interval. The causal mask alone makes rows cluster by position.</p>
<table><tr><th>head</th><th>k</th><th>content only</th><th>position only</th><th>both</th><th>majority</th><th>permuted labels (content / position / both)</th><th>carried by</th></tr>{_attention_rows(numbers['attention_heads'])}</table>
<pre>{esc(cluster_text)}</pre>{_img(pngs, 'attention_clusters', 'cluster figure')}</section>
<section id="probes"><h2>Linear probes</h2>
<table><tr><th>probe</th><th>metric</th><th>best</th><th>where</th><th>last position, by layer</th></tr>{probe_rows}</table>
{_img(pngs, 'probes', 'probes')}</section>
<section id="lens"><h2>Logit lens</h2>{_img(pngs, 'logit_lens', 'logit lens')}</section>
<section id="attribution"><h2>Direct attribution</h2>
<p>Parts sum to the read-out (max reconstruction error {attr['max_reconstruction_error']:.2e}).</p>
<table><tr><th>component</th><th>mean</th><th>mean |·|</th></tr>{attr_rows}</table>{_img(pngs, 'attribution', 'attribution')}</section>
<section id="ablation"><h2>Head ablation and activation patching</h2>
<table><tr><th>head</th><th>zero-ablation Δloss</th><th>mean-ablation Δloss</th><th>mean-ablation |Δprediction|</th></tr>{abl_rows}</table>
{_img(pngs, 'ablation', 'ablation')}{patch_html}</section>
<section id="neurons"><h2>MLP neurons</h2>{_img(pngs, 'neurons', 'neurons')}</section>
<script type="application/json" id="attn-data">{_script_json(numbers['attention_patterns_shown'])}</script>
<script>
(function () {{
  const data = JSON.parse(document.getElementById("attn-data").textContent);  // [L][S][H][T][T]
  const headSel = document.getElementById("head-select"), sampleSel = document.getElementById("sample-select");
  const canvas = document.getElementById("attn-canvas"), ctx = canvas.getContext("2d");
  function draw() {{
    const [l, h] = headSel.value.split(",").map(Number), s = Number(sampleSel.value);
    const m = data[l][s][h], T = m.length, cell = canvas.width / T;
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (let q = 0; q < T; q++) for (let k = 0; k < T; k++) {{
      const v = Math.max(0, Math.min(1, m[q][k]));
      ctx.fillStyle = `rgb(${{Math.round(255 - 170 * v)}},${{Math.round(255 - 200 * v)}},${{Math.round(255 - 60 * v)}})`;
      ctx.fillRect(k * cell, q * cell, Math.ceil(cell), Math.ceil(cell));
    }}
    const cap = document.getElementById("attn-caption");
    cap.textContent = `layer ${{l}}, head ${{h}}, sample ${{s}} (rows: queries, columns: keys)`;
    canvas.dataset.layer = l; canvas.dataset.head = h; canvas.dataset.sample = s;
  }}
  headSel.addEventListener("change", draw); sampleSel.addEventListener("change", draw); draw();
}})();
</script>
"""
