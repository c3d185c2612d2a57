"""Attention patterns and the notebook's ``analyze_attention``, done so it cannot fool itself.

:func:`analyze_attention` groups attention rows by query role (from the token
layout), picks k in 2..9 by silhouette score and clusters the rows with seeded
KMeans. It then asks *what carries the clusters*: LinearSVCs are trained on
some sequences and scored on **other sequences** (never rows of the same
sequence on both sides), for three feature sets:

* ``content``: features of the query token's content only (for the selection
  layout: the candidates' values, the label, each candidate's residual
  ``|ŷ_k − y|`` and the candidates' disagreement ``max ŷ − min ŷ``);
* ``position``: the query position alone (one-hot);
* ``both``.

Each score sits beside two nulls: the majority-class rate (always predict the
training set's most common cluster) and a label-permutation baseline (the same
classifier trained on shuffled cluster labels). The causal mask alone makes
attention rows cluster by position (row p has p+1 non-zero entries), so the
position-only score is the null a content claim has to beat.

Held-out sequences: the clusters are fitted on the ``samples`` sequences (a quarter of them held
out from the classifier's training); up to ``held_out`` (default :data:`HELD_OUT_SEQUENCES`) further
sequences of the input are labelled with the fitted clusters' nearest centre and scored as held-out
too, so each accuracy rests on a few hundred sequences, not ~30. The accuracy is the mean over
held-out sequences of each sequence's share of rows predicted right; its 95% interval is a Wilson
score interval with n = the number of held-out sequences. Per-sequence accuracies lie in [0, 1], so
their variance is at most p(1 − p): the interval is conservative for the mean over sequences (rows of
one sequence are not independent), it stays within [0, 1], and it does not collapse to zero width
when every sequence scores the same (as a position-only classifier of position bands does). A
classifier that predicts the majority class for every row is said to do so (``all_majority``); it is
never above the null.

Content features come from a builder chosen by layout (:data:`CONTENT_FEATURES`),
so other layouts (e.g. interleaved x/y tokens) register their own.
The figure is a separate pure function (:func:`selectlens.interpret.plots.attention_analysis_figure`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from selectlens.evaluate.metrics import mean_ci
from selectlens.model.gpt2 import SelectionTransformer

FEATURE_SETS = ("content", "position", "both")
SILHOUETTE_ROWS = 1000
HELD_OUT_SEQUENCES = 256

# (tokens [S, T, F], token feature names [F]) -> (features [S, T, C], names [C])
ContentFeatures = Callable[[np.ndarray, list[str]], tuple[np.ndarray, list[str]]]


@torch.no_grad()
def attention_patterns(model: SelectionTransformer, tokens: Tensor) -> Tensor:
    """``[n_layer, B, n_head, T, T]`` attention patterns (rows: queries, columns: keys)."""
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.spec.n_layer)]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[n] for n in names])


#: Query positions per role, by token layout (a task's ``layout``): one role for layouts whose every token is
#: alike (``query``); x at even and y at odd positions for interleaved (x, y) tokens.
QUERY_ROLES: dict[str, Callable[[int], dict[str, np.ndarray]]] = {
    "selection": lambda T: {"query": np.arange(T)},
    "per_example": lambda T: {"query": np.arange(T)},
    "interleaved": lambda T: {"x": np.arange(0, T, 2), "y": np.arange(1, T, 2)},
}


def query_roles(layout: str, n_positions: int) -> dict[str, np.ndarray]:
    """Query positions per role for ``layout`` (see :data:`QUERY_ROLES`)."""
    if layout not in QUERY_ROLES:
        raise ValueError(f"unknown layout {layout!r} (known: {', '.join(QUERY_ROLES)})")
    return QUERY_ROLES[layout](n_positions)


def selection_content_features(tokens: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Content of selection-layout tokens ``[ŷ_1 … ŷ_K, y]``: the K candidate values, the label, each
    candidate's residual ``|ŷ_k − y|`` and the disagreement ``max_k ŷ_k − min_k ŷ_k``.

    ``tokens [S, T, K+1]`` → ``[S, T, 2K+2]``. (The last token's label is masked to 0 in the input;
    its features are what the model sees.)
    """
    cand, y = tokens[..., :-1], tokens[..., -1:]
    resid = np.abs(cand - y)
    disagreement = cand.max(-1, keepdims=True) - cand.min(-1, keepdims=True)
    cnames, yname = names[:-1], names[-1]
    out_names = list(cnames) + [yname] + [f"|{c} − {yname}|" for c in cnames] + ["disagreement"]
    return np.concatenate([cand, y, resid, disagreement], axis=-1), out_names


def token_content_features(tokens: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """The raw token entries as content features (``[S, T, F]`` unchanged)."""
    return tokens, list(names)


CONTENT_FEATURES: dict[str, ContentFeatures] = {
    "selection": selection_content_features,
    "interleaved": token_content_features,
}


@dataclass
class Cluster:
    label: int
    members: list[tuple[int, int]]  # (sample, query position)
    mean_features: list[float]  # content features, then the position
    dominant_features: list[int]  # indices into AttentionAnalysis.feature_names, most distinctive first
    mean_attention: list[float]  # mean attention row over the members [T]


@dataclass
class FeatureSetScore:
    """Held-out accuracy of a LinearSVC from one feature set to the cluster labels, beside its nulls.

    ``accuracy``: the mean over the ``test_sequences`` held-out sequences of each one's share of rows
    right; ``ci``: its Wilson 95% interval with n = ``test_sequences`` (see the module docstring).
    ``majority``: accuracy of predicting the training set's most common cluster; ``all_majority``:
    the classifier predicted exactly that for every test row (its accuracy *is* the majority rate).
    ``permutation``: mean accuracy of the same classifier trained on shuffled labels
    (``permutation_runs`` of them). ``above_null``: not ``all_majority`` and the CI's low end is
    above both nulls.
    """

    name: str
    accuracy: float
    ci: tuple[float, float]
    majority: float
    permutation: float
    permutation_runs: list[float]
    above_null: bool
    test_sequences: int = 0
    all_majority: bool = False


@dataclass
class RoleAnalysis:
    role: str
    positions: list[int]
    k: int
    silhouette_by_k: dict[int, float]
    labels: list[int]  # one per row, rows ordered (sample, position)
    rows: list[tuple[int, int]]
    train_samples: list[int]  # sample indices (into AttentionAnalysis.samples order) used to fit
    test_samples: list[int]  # held-out sample indices
    scores: dict[str, FeatureSetScore]  # "content", "position", "both"
    content_gain: tuple[float, float, float]  # both − position accuracy: (mean, CI low, CI high), paired by test sequence
    position_gain: tuple[float, float, float]  # both − content accuracy, paired by test sequence
    carried_by: str  # a sentence generated from the numbers above
    clusters: list[Cluster] = field(default_factory=list)


@dataclass
class AttentionAnalysis:
    layer: int
    head: int
    samples: list[int]
    layout: str
    token_feature_names: list[str]
    feature_names: list[str]  # content features, then "position"
    pattern: np.ndarray  # [n_samples, T, T]
    tokens: np.ndarray  # [n_samples, T, F]
    roles: dict[str, RoleAnalysis]


def _choose_k(rows: np.ndarray, seed: int, k_range: range) -> tuple[int, dict[int, float], np.ndarray, np.ndarray]:
    """``(k, silhouette by k, labels [R], centres [k, T])`` of the best KMeans clustering of ``rows``."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    scores: dict[int, float] = {}
    labels: dict[int, np.ndarray] = {}
    centres: dict[int, np.ndarray] = {}
    n_distinct = len(np.unique(rows.round(6), axis=0))
    for k in k_range:
        if k >= min(len(rows), n_distinct):
            break
        km = KMeans(n_clusters=k, random_state=seed, n_init=4).fit(rows)
        if len(set(km.labels_)) < 2:
            continue
        # silhouette on a seeded subsample of at most SILHOUETTE_ROWS rows (it is quadratic in rows)
        scores[k] = float(silhouette_score(rows, km.labels_, sample_size=min(len(rows), SILHOUETTE_ROWS), random_state=seed))
        labels[k], centres[k] = km.labels_, km.cluster_centers_
    if not scores:
        return 1, {}, np.zeros(len(rows), dtype=int), rows.mean(0, keepdims=True)
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores, labels[best], centres[best]


def nearest_centre(rows: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``[R]`` index of the nearest centre (Euclidean) for each row of ``rows [R, T]``, ``centres [k, T]``."""
    d = ((rows[:, None, :] - centres[None, :, :]) ** 2).sum(-1)  # [R, k]
    return d.argmin(1)


def wilson_interval(p: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score 95% interval for a proportion ``p`` observed on ``n`` units; inside [0, 1]."""
    if n < 1:
        return float("nan"), float("nan")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _fit_predict(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, seed: int) -> np.ndarray:
    """A standardised LinearSVC fitted on ``(Xtr, ytr)``, predicting ``Xte``; a constant when ``ytr`` has one class."""
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if len(np.unique(ytr)) < 2:
        return np.full(len(Xte), ytr[0])
    scaler = StandardScaler().fit(Xtr)
    clf = LinearSVC(C=1.0, max_iter=5000, random_state=seed).fit(scaler.transform(Xtr), ytr)
    return clf.predict(scaler.transform(Xte))


def _per_sequence_accuracy(correct: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``[n_test_sequences]`` mean of ``correct`` within each sequence."""
    uniq, inv = np.unique(groups, return_inverse=True)
    return np.bincount(inv, weights=correct.astype(float)) / np.bincount(inv)


def _score_feature_set(name: str, X: np.ndarray, labels: np.ndarray, groups: np.ndarray, train: np.ndarray,
                       seed: int, permutations: int) -> tuple[FeatureSetScore, np.ndarray]:
    """Fit on the training rows, score on the test rows; also the majority and permutation nulls."""
    test = ~train
    rng = np.random.default_rng(seed)
    pred = _fit_predict(X[train], labels[train], X[test], seed)
    per_seq = _per_sequence_accuracy(pred == labels[test], groups[test])
    acc = float(per_seq.mean())
    lo, hi = wilson_interval(acc, len(per_seq))
    top = np.bincount(labels[train]).argmax()
    majority = float(_per_sequence_accuracy(labels[test] == top, groups[test]).mean())
    all_majority = bool((pred == top).all())
    runs = [float(_per_sequence_accuracy(_fit_predict(X[train], rng.permutation(labels[train]), X[test], seed)
                                         == labels[test], groups[test]).mean())
            for _ in range(permutations)]
    perm = float(np.mean(runs)) if runs else float("nan")
    null = max(majority, perm if runs else majority)
    score = FeatureSetScore(name, acc, (lo, hi), majority, perm, runs, bool(lo > null and not all_majority),
                            len(per_seq), all_majority)
    return score, per_seq


def _carried_by(scores: dict[str, FeatureSetScore], content_gain, position_gain, k: int) -> str:
    """One sentence, from the numbers, on which features carry the clusters."""
    if k < 2:
        return "no clusters (a single group of rows)"
    c, p = scores["content"].above_null, scores["position"].above_null
    adds_c, adds_p = content_gain[1] > 0, position_gain[1] > 0
    if not c and not p:
        return ("neither content nor position predicts the clusters above the null "
                "(majority-class rate / label permutation)")
    if p and not c:
        return "position: content alone is not above the null" + (
            "" if not adds_c else ", though content adds to position (both > position, paired CI above 0)")
    if c and not p:
        return "content: position alone is not above the null" + (
            "" if not adds_p else ", though position adds to content")
    if adds_c and adds_p:
        return "content and position together: each is above the null and each adds to the other"
    if adds_c:
        return "content beyond position: both are above the null and content adds to position (paired CI above 0)"
    if adds_p:
        return "position: both are above the null, but content adds nothing beyond position (paired CI includes 0)"
    return "content and position are interchangeable here: each alone is above the null and neither adds to the other"


def _split_samples(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(n - 1, max(1, int(round(n * test_fraction))))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _analyze_role(role: str, positions: np.ndarray, pattern: np.ndarray, content: np.ndarray,
                  train_samples: np.ndarray, *, seed: int, k_range: range, permutations: int,
                  fit_sequences: int | None = None) -> RoleAnalysis:
    """Cluster one role's attention rows and score the three feature sets on held-out sequences.

    The clusters are fitted on the rows of the first ``fit_sequences`` sequences (default: all); the
    rows of the others get their nearest centre's label."""
    S, T = pattern.shape[:2]
    rows_idx = [(s, int(p)) for s in range(S) for p in positions]
    groups = np.array([s for s, _ in rows_idx])
    pos = np.array([p for _, p in rows_idx])
    rows = pattern[groups, pos]  # [R, T]
    feats = {
        "content": content[groups, pos],  # [R, C]
        "position": (pos[:, None] == np.asarray(positions)[None, :]).astype(float),  # [R, P] one-hot
    }
    feats["both"] = np.concatenate([feats["content"], feats["position"]], axis=1)
    fit = groups < (S if fit_sequences is None else fit_sequences)
    k, sil, fit_labels, centres = _choose_k(rows[fit], seed, k_range)
    labels = np.empty(len(rows), dtype=int)
    labels[fit] = fit_labels
    if (~fit).any():
        labels[~fit] = nearest_centre(rows[~fit], centres) if k > 1 else 0
    train = np.isin(groups, train_samples)
    scores, per_seq = {}, {}
    for name in FEATURE_SETS:
        scores[name], per_seq[name] = _score_feature_set(name, feats[name], labels, groups, train, seed, permutations)
    content_gain = mean_ci(torch.from_numpy(per_seq["both"] - per_seq["position"]))
    position_gain = mean_ci(torch.from_numpy(per_seq["both"] - per_seq["content"]))
    described = np.concatenate([feats["content"], pos[:, None] / max(1, T - 1)], axis=1)  # [R, C+1]
    clusters = _describe_clusters(rows_idx, rows, described, labels, k)
    return RoleAnalysis(role, [int(p) for p in positions], k, sil, labels.tolist(), rows_idx,
                        train_samples.tolist(), sorted(set(groups[~train].tolist())), scores,
                        content_gain, position_gain, _carried_by(scores, content_gain, position_gain, k), clusters)


def _describe_clusters(rows_idx, rows: np.ndarray, feats: np.ndarray, labels: np.ndarray, k: int) -> list[Cluster]:
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
    return clusters


def analyze_attention(
    model: SelectionTransformer,
    tokens: Tensor,
    layer: int,
    head: int,
    *,
    samples: int | list[int] = 128,
    held_out: int = HELD_OUT_SEQUENCES,
    **options,
) -> AttentionAnalysis:
    """Cluster the attention rows of one head by query role and ask which features carry the clusters.

    ``tokens [B, T, F]``; ``samples``: how many leading sequences (or which ones) to pool — rows from
    all of them are clustered together, so clusters are patterns that recur. ``held_out``: up to this
    many further sequences of ``tokens`` (those not in ``samples``, in order) are scored as held-out
    besides the pool's own held-out quarter, their rows labelled by the nearest cluster centre (fewer
    when ``tokens`` has fewer: ``RoleAnalysis.test_samples`` says how many). ``options`` are those of
    :func:`analyze_patterns` (layout, feature_names, features, k_range, test_fraction, permutations, seed).
    """
    if not 0 <= layer < model.spec.n_layer or not 0 <= head < model.spec.n_head:
        raise ValueError(f"layer {layer} / head {head} out of range")
    idx = list(range(min(samples, tokens.shape[0]))) if isinstance(samples, int) else list(samples)
    pool = set(idx)
    extra = [i for i in range(tokens.shape[0]) if i not in pool][: max(0, held_out)]
    toks = tokens[idx + extra]
    pattern = attention_patterns(model, toks)[layer, :, head].cpu().double().numpy()  # [S, T, T]
    return analyze_patterns(pattern, toks.cpu().double().numpy(), layer=layer, head=head, samples=idx + extra,
                            fit_sequences=len(idx), **options)


def analyze_patterns(
    pattern: np.ndarray,
    tokens: np.ndarray,
    *,
    layer: int = -1,
    head: int = -1,
    samples: list[int] | None = None,
    layout: str = "selection",
    feature_names: list[str] | None = None,
    features: str | ContentFeatures | None = None,
    k_range: range = range(2, 10),
    test_fraction: float = 0.25,
    permutations: int = 3,
    seed: int = 0,
    fit_sequences: int | None = None,
) -> AttentionAnalysis:
    """:func:`analyze_attention` on given attention rows: ``pattern [S, T, T]`` of one head and the
    ``tokens [S, T, F]`` it was computed from (so the analysis can be checked on planted patterns).

    Sequences (not rows) are split into train and test (``test_fraction`` held out). ``feature_names``
    names the token's F entries; ``features`` picks the content-feature builder (a key of
    :data:`CONTENT_FEATURES` or a callable; default: the layout's); ``permutations`` label shuffles
    give the permutation null. ``fit_sequences``: only the first this many sequences are clustered and
    split into train and test; every later one is held out, labelled by its rows' nearest cluster centre.
    """
    S, T, F = tokens.shape
    pool = S if fit_sequences is None else fit_sequences
    if pool < 2 or pool > S:
        raise ValueError("the attention analysis needs at least 2 sequences to cluster (it holds some out)")
    builder = features if callable(features) else CONTENT_FEATURES[features or layout]
    names = list(feature_names or [f"f{i}" for i in range(F)])
    content, content_names = builder(tokens, names)  # [S, T, C]
    train_samples, _ = _split_samples(pool, test_fraction, seed)
    roles = {role: _analyze_role(role, positions, pattern, content, train_samples, seed=seed, k_range=k_range,
                                 permutations=permutations, fit_sequences=pool)
             for role, positions in query_roles(layout, T).items()}
    return AttentionAnalysis(layer, head, list(samples if samples is not None else range(S)), layout, names,
                             content_names + ["position"], pattern, tokens, roles)


def _score_line(s: FeatureSetScore) -> str:
    if s.all_majority:
        return (f"{s.name:>8}: predicts the majority class for every row ({s.accuracy:.3f}, the majority rate); "
                f"permuted labels {s.permutation:.3f} — NOT above the null")
    flag = "above the null" if s.above_null else "NOT above the null"
    return (f"{s.name:>8}: {s.accuracy:.3f} [{s.ci[0]:.3f}, {s.ci[1]:.3f}] vs majority {s.majority:.3f}, "
            f"permuted labels {s.permutation:.3f} — {flag}")


def _few_note(n_test: int) -> str:
    return (f"; fewer than {HELD_OUT_SEQUENCES} held-out sequences because fewer were given, so the intervals are wide"
            if n_test < HELD_OUT_SEQUENCES else "")


def describe_analysis(a: AttentionAnalysis) -> str:
    """A text summary: per role, k, silhouette, held-out accuracy of each feature set beside its nulls,
    which features carry the clusters (in words), and each cluster's members and dominant features."""
    lines = [f"layer {a.layer}, head {a.head}, {len(a.samples)} sequences, layout {a.layout}"]
    for r in a.roles.values():
        sil = r.silhouette_by_k.get(r.k, float("nan"))
        lines.append(f"  {r.role} queries: k={r.k} (silhouette {sil:.3f}); LinearSVC held-out accuracy on "
                     f"{len(r.test_samples)} held-out sequences (trained on {len(r.train_samples)} others; "
                     f"Wilson 95% intervals over sequences{_few_note(len(r.test_samples))}):")
        lines += [f"    {_score_line(s)}" for s in r.scores.values()]
        g, h = r.content_gain, r.position_gain
        lines.append(f"    content adds to position: {g[0]:+.3f} [{g[1]:+.3f}, {g[2]:+.3f}]; "
                     f"position adds to content: {h[0]:+.3f} [{h[1]:+.3f}, {h[2]:+.3f}] (paired by sequence)")
        lines.append(f"    the clusters are carried by: {r.carried_by}")
        for c in r.clusters:
            positions = sorted({p for _, p in c.members})
            dom = ", ".join(a.feature_names[i] for i in c.dominant_features)
            lines.append(f"    cluster {c.label}: {len(c.members)} rows, positions {positions[:12]}"
                         f"{'…' if len(positions) > 12 else ''}; dominant features: {dom}")
    return "\n".join(lines)
