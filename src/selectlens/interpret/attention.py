"""Attention patterns and the notebook's ``analyze_attn_matrix``, done right.

:func:`analyze_attention` groups attention rows by query role (from the token
layout), picks k in 2..9 by silhouette score, clusters with seeded KMeans,
fits a LinearSVC from token features to cluster labels (held-out accuracy
reported), and describes each cluster. It returns a dataclass; the figure is a
separate pure function (:func:`selectlens.interpret.plots.attention_analysis_figure`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from selectlens.model.gpt2 import SelectionTransformer

LAYOUTS = ("selection", "interleaved")


@torch.no_grad()
def attention_patterns(model: SelectionTransformer, tokens: Tensor) -> Tensor:
    """``[n_layer, B, n_head, T, T]`` attention patterns (rows: queries, columns: keys)."""
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.spec.n_layer)]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[n] for n in names])


def query_roles(layout: str, n_positions: int) -> dict[str, np.ndarray]:
    """Query positions per role: one role (``query``) for the selection layout; x at even and y at odd
    positions for interleaved (x, y) layouts."""
    if layout == "selection":
        return {"query": np.arange(n_positions)}
    if layout == "interleaved":
        return {"x": np.arange(0, n_positions, 2), "y": np.arange(1, n_positions, 2)}
    raise ValueError(f"unknown layout {layout!r} (known: {', '.join(LAYOUTS)})")


@dataclass
class Cluster:
    label: int
    members: list[tuple[int, int]]  # (sample, query position)
    mean_features: list[float]
    dominant_features: list[int]  # feature indices, most distinctive first
    mean_attention: list[float]  # mean attention row over the members [T]


@dataclass
class RoleAnalysis:
    role: str
    positions: list[int]
    k: int
    silhouette_by_k: dict[int, float]
    labels: list[int]  # one per row, rows ordered (sample, position)
    rows: list[tuple[int, int]]
    svm_heldout_accuracy: float
    svm_chance_accuracy: float
    svm_coef: list[list[float]]
    clusters: list[Cluster] = field(default_factory=list)


@dataclass
class AttentionAnalysis:
    layer: int
    head: int
    samples: list[int]
    layout: str
    feature_names: list[str]
    pattern: np.ndarray  # [n_samples, T, T]
    tokens: np.ndarray  # [n_samples, T, F]
    roles: dict[str, RoleAnalysis]


def _choose_k(rows: np.ndarray, seed: int, k_range: range) -> tuple[int, dict[int, float], np.ndarray]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    scores: dict[int, float] = {}
    labels: dict[int, np.ndarray] = {}
    n_distinct = len(np.unique(rows.round(6), axis=0))
    for k in k_range:
        if k >= min(len(rows), n_distinct):
            break
        km = KMeans(n_clusters=k, random_state=seed, n_init=10).fit(rows)
        if len(set(km.labels_)) < 2:
            continue
        scores[k] = float(silhouette_score(rows, km.labels_))
        labels[k] = km.labels_
    if not scores:
        return 1, {}, np.zeros(len(rows), dtype=int)
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores, labels[best]


def _svm_accuracy(features: np.ndarray, labels: np.ndarray, seed: int) -> tuple[float, float, list[list[float]]]:
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    counts = np.bincount(labels)
    chance = float(counts.max() / counts.sum())
    if len(counts[counts > 0]) < 2:
        return float("nan"), chance, []
    stratify = labels if counts[counts > 0].min() >= 2 else None
    Xtr, Xte, ytr, yte = train_test_split(features, labels, test_size=0.25, random_state=seed, stratify=stratify)
    if len(set(ytr)) < 2:
        return float("nan"), chance, []
    scaler = StandardScaler().fit(Xtr)
    clf = LinearSVC(max_iter=20000, random_state=seed).fit(scaler.transform(Xtr), ytr)
    acc = float((clf.predict(scaler.transform(Xte)) == yte).mean())
    full = LinearSVC(max_iter=20000, random_state=seed).fit(StandardScaler().fit_transform(features), labels)
    return acc, chance, full.coef_.tolist()


def analyze_attention(
    model: SelectionTransformer,
    tokens: Tensor,
    layer: int,
    head: int,
    *,
    samples: int | list[int] = 64,
    layout: str = "selection",
    feature_names: list[str] | None = None,
    k_range: range = range(2, 10),
    seed: int = 0,
) -> AttentionAnalysis:
    """Cluster the attention rows of one head by query role and explain the clusters from the inputs.

    ``samples``: how many leading sequences (or which ones) to pool; rows from
    all of them are clustered together, so clusters are patterns that recur.
    Features of a row: the query token's features and its relative position.
    """
    if not 0 <= layer < model.spec.n_layer or not 0 <= head < model.spec.n_head:
        raise ValueError(f"layer {layer} / head {head} out of range")
    idx = list(range(min(samples, tokens.shape[0]))) if isinstance(samples, int) else list(samples)
    toks = tokens[idx]
    pattern = attention_patterns(model, toks)[layer, :, head].cpu().double().numpy()  # [S, T, T]
    tok = toks.cpu().double().numpy()
    S, T, F = tok.shape
    names = feature_names or [f"f{i}" for i in range(F)]
    roles: dict[str, RoleAnalysis] = {}
    for role, positions in query_roles(layout, T).items():
        rows_idx = [(s, int(p)) for s in range(S) for p in positions]
        rows = np.stack([pattern[s, p] for s, p in rows_idx])  # [R, T]
        feats = np.stack([np.concatenate([tok[s, p], [p / max(1, T - 1)]]) for s, p in rows_idx])  # [R, F+1]
        k, scores, labels = _choose_k(rows, seed, k_range)
        acc, chance, coef = _svm_accuracy(feats, labels, seed)
        z = (feats - feats.mean(0)) / (feats.std(0) + 1e-12)
        clusters = []
        for c in range(k):
            m = labels == c
            zc = z[m].mean(0)
            clusters.append(Cluster(
                label=c,
                members=[rows_idx[i] for i in np.nonzero(m)[0]],
                mean_features=feats[m].mean(0).tolist(),
                dominant_features=[int(i) for i in np.argsort(-np.abs(zc))[:3]],
                mean_attention=rows[m].mean(0).tolist(),
            ))
        roles[role] = RoleAnalysis(role, [int(p) for p in positions], k, scores, labels.tolist(), rows_idx,
                                   acc, chance, coef, clusters)
    return AttentionAnalysis(layer, head, idx, layout, names + ["position"], pattern, tok, roles)


def describe_analysis(a: AttentionAnalysis) -> str:
    """A text summary: per role, k, silhouette, SVM accuracy, and each cluster's members and dominant features."""
    lines = [f"layer {a.layer}, head {a.head}, {len(a.samples)} samples, layout {a.layout}"]
    for r in a.roles.values():
        sil = r.silhouette_by_k.get(r.k, float("nan"))
        lines.append(f"  {r.role} queries: k={r.k} (silhouette {sil:.3f}); LinearSVC held-out accuracy "
                     f"{r.svm_heldout_accuracy:.3f} (chance {r.svm_chance_accuracy:.3f})")
        for c in r.clusters:
            positions = sorted({p for _, p in c.members})
            dom = ", ".join(a.feature_names[i] for i in c.dominant_features)
            lines.append(f"    cluster {c.label}: {len(c.members)} rows, positions {positions[:12]}"
                         f"{'…' if len(positions) > 12 else ''}; dominant features: {dom}")
    return "\n".join(lines)
