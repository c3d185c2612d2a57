"""Figures: pure functions from results to matplotlib figures (nothing is computed here)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import gridspec  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from selectlens.interpret.attention import AttentionAnalysis  # noqa: E402


def _integer_ticks(ax, shape: tuple[int, ...]) -> None:
    """Label rows and columns of a small heatmap with their integer indices."""
    rows, cols = shape[0], shape[1]
    ax.set_yticks(range(rows))
    ax.set_xticks(range(0, cols, max(1, cols // 10)))


def attention_heatmap(pattern: np.ndarray, title: str = "") -> Figure:
    """One ``[T, T]`` pattern (queries down, keys across)."""
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    im = ax.imshow(pattern, vmin=0, vmax=1, cmap="Purples")
    ax.set_xlabel("key position")
    ax.set_ylabel("query position")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def attention_grid(patterns: np.ndarray, sample: int = 0) -> Figure:
    """All heads of all layers for one sample; ``patterns [L, B, H, T, T]``."""
    L, _, H = patterns.shape[:3]
    fig, axes = plt.subplots(L, H, figsize=(2.6 * H, 2.5 * L), squeeze=False)
    for l in range(L):
        for h in range(H):
            ax = axes[l][h]
            ax.imshow(patterns[l, sample, h], vmin=0, vmax=1, cmap="Purples")
            ax.set_title(f"L{l} H{h}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"attention patterns, sample {sample}", fontsize=10)
    fig.tight_layout()
    return fig


def attention_analysis_figure(a: AttentionAnalysis, sample_index: int = 0) -> Figure:
    """The notebook's gridspec figure for one sample: per query role (rows), the inputs, the cluster
    strip and the attention blocks by key role (columns)."""
    from selectlens.interpret.attention import query_roles

    pattern, tokens = a.pattern[sample_index], a.tokens[sample_index]
    T = pattern.shape[0]
    roles = query_roles(a.layout, T)
    key_roles = list(roles.items())
    n_rows = len(roles)
    fig = plt.figure(figsize=(4 + 3.2 * len(key_roles), 1.2 + 3.0 * n_rows))
    gs = gridspec.GridSpec(n_rows + 1, 2 + len(key_roles), width_ratios=[0.6, 0.12] + [1] * len(key_roles),
                           height_ratios=[0.35] + [1] * n_rows, wspace=0.05, hspace=0.08)
    for j, (kname, kpos) in enumerate(key_roles):
        ax = fig.add_subplot(gs[0, 2 + j])
        ax.imshow(tokens[kpos].T, aspect="auto", cmap="coolwarm")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{kname} keys", fontsize=8)
    sample = a.samples[sample_index]
    for i, (qname, qpos) in enumerate(roles.items()):
        role = a.roles[qname]
        labels = np.array([role.labels[role.rows.index((sample_index, int(p)))] for p in qpos])
        ax_in = fig.add_subplot(gs[1 + i, 0])
        ax_in.imshow(tokens[qpos], aspect="auto", cmap="coolwarm")
        ax_in.set_ylabel(f"{qname} queries", fontsize=8)
        ax_in.set_xticks(range(tokens.shape[1]))
        ax_in.set_xticklabels(a.token_feature_names, rotation=90, fontsize=6)
        ax_cl = fig.add_subplot(gs[1 + i, 1])
        ax_cl.imshow(labels[:, None], aspect="auto", cmap="tab10", vmin=0, vmax=9)
        ax_cl.set_xticks([])
        ax_cl.set_yticks([])
        for j, (_, kpos) in enumerate(key_roles):
            ax = fig.add_subplot(gs[1 + i, 2 + j])
            ax.imshow(pattern[np.ix_(qpos, kpos)], vmin=0, vmax=1, cmap="Purples", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"layer {a.layer}, head {a.head}, sample {sample}", fontsize=10)
    return fig


def probe_figure(results: Sequence) -> Figure:
    """One heatmap per probe: layer × position."""
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.0), squeeze=False)
    for ax, r in zip(axes[0], results):
        lo = 0.0 if r.metric == "r2" else min(r.chance, float(r.scores.min()))
        im = ax.imshow(r.scores, aspect="auto", vmin=lo, vmax=1, cmap="viridis")
        _integer_ticks(ax, r.scores.shape)
        ax.set_title(f"{r.name} ({r.metric})", fontsize=8)
        ax.set_xlabel("position")
        ax.set_ylabel("layer (resid_pre; last = final)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def logit_lens_figure(error: np.ndarray, kind: str) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    im = ax.imshow(np.log10(error + 1e-12), aspect="auto", cmap="magma_r")
    _integer_ticks(ax, error.shape)
    ax.set_xlabel("position")
    ax.set_ylabel("layer (resid_pre; last = final)")
    ax.set_title(f"logit lens: log10 mean {kind} against each position's label", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def attribution_figure(components: Sequence[str], values: np.ndarray) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(components))
    ax.bar(x - 0.2, values.mean(0), width=0.4, label="mean contribution")
    ax.bar(x + 0.2, np.abs(values).mean(0), width=0.4, label="mean |contribution|")
    ax.set_xticks(x)
    ax.set_xticklabels(components, rotation=60, ha="right", fontsize=7)
    ax.axhline(0, color="black", lw=0.6)
    ax.legend(fontsize=7)
    ax.set_title("direct attribution of the read-out at the last position", fontsize=9)
    fig.tight_layout()
    return fig


def effects_figure(panels: dict[str, np.ndarray], xlabel: str, ylabel: str = "layer") -> Figure:
    """Side-by-side heatmaps (ablation or patching effects)."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 2.8), squeeze=False)
    for ax, (title, m) in zip(axes[0], panels.items()):
        v = float(np.abs(m).max()) or 1.0
        im = ax.imshow(m, aspect="auto", cmap="RdBu_r", vmin=-v, vmax=v)
        _integer_ticks(ax, m.shape)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def neuron_figure(stats: Sequence[dict]) -> Figure:
    fig, axes = plt.subplots(1, len(stats), figsize=(3.2 * len(stats), 2.6), squeeze=False)
    for l, (ax, s) in enumerate(zip(axes[0], stats)):
        ax.hist(s["frac_active"], bins=20, color="steelblue")
        ax.set_title(f"layer {l}: fraction of inputs with GELU > 0", fontsize=8)
        ax.set_xlabel("fraction active")
    fig.tight_layout()
    return fig
