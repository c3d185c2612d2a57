"""The report sections of the raw-data (sequence) tasks: algorithm agreement over context length
(``interpret.agreement``); attention with x / y query roles — the four role blocks beside
uniform causal attention, and the cluster analysis (content / position / both, beside majority
and permutation nulls) for every head and role; probes at every layer and read-out position (w,
σ, the Bayes posterior weights, the least-squares estimate), each beside a shuffled-label null;
activation patching between sequences that differ only in σ. :func:`sequence_sections` runs them
on a :class:`~selectlens.interpret.report.ReportContext` and returns their HTML.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from selectlens.interpret import plots
from selectlens.interpret.agreement import agreement_figure, algorithm_agreement
from selectlens.interpret.attention import analyze_attention, attention_patterns, query_roles
from selectlens.interpret.page import img as _img, png as _png, script_json as _script_json
from selectlens.interpret.raw_analyses import (
    ROLE_BLOCKS, RawProbe, interleaved_content_features, raw_activation_patching, raw_probes, role_blocks,
)
from selectlens.tasks.protocol import PATCH_STREAM, make_generator, stream_seed


def sequence_sections(ctx) -> str:
    """Every raw-data analysis on ``ctx`` (figures into ``ctx.pngs``, numbers into ``ctx.numbers``); their HTML."""
    model, task, batch, cfg, pngs, numbers = ctx.model, ctx.task, ctx.batch, ctx.cfg, ctx.pngs, ctx.numbers
    ctx.say("algorithm agreement")
    agreement = algorithm_agreement(model, task, batch)
    numbers["agreement"] = agreement
    pngs["agreement"] = _png(agreement_figure(agreement))
    ctx.say("attention: role blocks and clusters, every head")
    numbers["attention"] = _attention(model, batch, task, cfg, ctx.attention_samples, pngs)
    ctx.say("probes at every layer and read-out position")
    probes = raw_probes(model, batch, list(task.noise_levels), list(task.noise_probs), seed=cfg.seed, readout=task.readout)
    numbers["probes"] = {p.name: _probe_numbers(p) for p in probes}
    pngs["probes"] = _png(probe_grid_figure(probes))
    pair = task.paired_batches(min(ctx.sequences, 256), make_generator(stream_seed(cfg.seed, PATCH_STREAM), ctx.device))
    if pair is not None:
        ctx.say(f"activation patching between sequences that differ only in {pair.latent}")
        last = list(range(pair.clean.tokens.shape[1]))[task.readout][-1]  # the last read-out position
        numbers["patching"] = _patching(model, pair, pngs, last)
    return render_sections(ctx.ev, pngs, numbers)


def _attention(model, batch, task, cfg, samples: int, pngs: dict[str, bytes]) -> dict[str, Any]:
    """Role blocks (x→x, x→y, y→x, y→y) per head beside the uniform-causal null, where the layout has x and y
    tokens, and the cluster analysis of every head for each query role (clusters fitted on ``samples``
    sequences, scored on further held-out ones)."""
    dtype = next(model.parameters()).dtype
    tokens = batch.tokens[:samples].to(dtype)
    pats = attention_patterns(model, tokens).cpu()  # [L, S, H, T, T]
    pngs["attention_grid"] = _png(plots.attention_grid(pats[:, :4].numpy(), 0))
    blocks = None
    if set(query_roles(task.layout, tokens.shape[1])) == {"x", "y"}:
        blocks = role_blocks(pats)
        pngs["role_blocks"] = _png(plots.effects_figure({b: blocks[b] - blocks[f"null[{b}]"] for b in ROLE_BLOCKS},
                                                        xlabel="head"))
    names = [f"x{j}" for j in range(cfg.data.d_d)] + ["y"]
    heads = []
    for l in range(model.spec.n_layer):
        for h in range(model.spec.n_head):
            a = analyze_attention(model, batch.tokens.to(dtype), l, h, samples=samples, layout=task.layout,
                                  feature_names=names, features=interleaved_content_features, seed=cfg.seed)
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


def _patching(model, pair, pngs: dict[str, bytes], position: int) -> dict[str, Any]:
    clean, corrupt = pair.clean, pair.corrupt
    dtype = next(model.parameters()).dtype
    clean.tokens, corrupt.tokens = clean.tokens.to(dtype), corrupt.tokens.to(dtype)
    res = raw_activation_patching(model, clean, corrupt, position)
    pngs["patching"] = _png(plots.effects_figure({"resid_pre patched (effect, 1 = clean)": res["resid_output"]},
                                                 xlabel="position (x-token i at 2i)"))
    pngs["patching_heads"] = _png(plots.effects_figure({"head z patched (effect)": res["head_output"]}, xlabel="head"))
    return {"sigma_clean": pair.clean_value, "sigma_corrupt": pair.corrupt_value, "sequences": len(clean), **res}


# ---------------------------------------------------------------------------
# HTML


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
        if s.get("all_majority"):
            return f"majority class for every row ({s['accuracy']:.3f})"
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


def render_sections(ev: dict[str, Any], pngs: dict[str, bytes], numbers: dict[str, Any]) -> str:
    """The HTML of the raw-data sections (agreement, attention, probes, patching)."""
    att = numbers["attention"]
    return f"""<section id="agreement"><h2>Algorithm agreement</h2>
<p>Mean squared distance between the model's predictions and each baseline's, per n (not against the target).</p>
{_agreement_table(numbers['agreement'], ev['table_positions'])}{_img(pngs, 'agreement', 'algorithm agreement')}</section>
<section id="attention"><h2>Attention: x and y queries</h2>
<p>Attention mass from x-queries (even positions) and y-queries (odd) to x- and y-keys, averaged over
{att['samples']} sequences, beside the null of uniform attention over the visible keys (what the causal mask alone gives).
The figure shows each block minus its null.</p>
{_role_block_table(att['role_blocks']) + _img(pngs, 'role_blocks', 'role blocks') if att['role_blocks'] is not None else '<p>One kind of token in this layout: no role blocks.</p>'}
<p>Clusters of attention rows per head and query role; a LinearSVC trained on some sequences predicts them on others from
the query token's content (x, y, ‖x‖, |y|), its position, or both, beside the majority rate and a label-permutation null.</p>
{_cluster_table(att['heads'])}{_img(pngs, 'attention_grid', 'attention grid')}</section>
<section id="probes"><h2>Linear probes at every layer and x position</h2>
<p>Ridge (R²) or logistic (accuracy) probes from the residual stream at x-token n, trained on 3/4 of the sequences and
scored on the rest; the null is the same probe trained on shuffled labels. Layer 0 is the embedding.</p>
{_probe_table(numbers['probes'])}{_img(pngs, 'probes', 'probes')}</section>
<section id="patching"><h2>Activation patching between σ levels</h2>{_patching_html(numbers, pngs)}</section>
<script type="application/json" id="report-numbers">{_script_json({"task": numbers.get("task"), "probes": {k: {"best": v["best"], "best_at": v["best_at"]} for k, v in numbers["probes"].items()}})}</script>
"""
