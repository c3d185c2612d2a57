"""Interpretability analyses for raw-data runs, in either token layout.

Interleaved tokens ``[B, 2N, d+1]``: x-token i at position 2i, y-token i at 2i+1, the prediction
of y_i read out at x-token i; one token per example ``[B, N, d+1]``: token i = [x_i, y_{i−1}],
read out at position i (role blocks need both kinds of token, so they are interleaved-only). Everything here is computed on held-out sequences and shown
beside a null:

* :func:`role_blocks` — attention mass from x / y queries to x / y keys (x→x, x→y, y→x, y→y)
  per head, beside what uniform causal attention would give (the position-only null);
* :func:`interleaved_content_features` — the query token's content for ``analyze_attention``;
* :func:`raw_probes` — linear probes at every layer and x position for w (R² per coordinate
  and mean), σ (accuracy vs the majority rate), the Bayes posterior weight of each noise level
  (R²) and the least-squares estimate (R²), split by sequence, each with a shuffled-label null;
* :func:`raw_activation_patching` — on sequences that differ only in σ (same w, x, z; the task's
  ``paired_batches``), clean activations patched into the corrupted run.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from selectlens.baselines.raw import bayes_mixture
from selectlens.evaluate.metrics import Z95
from selectlens.interpret.circuits import head_patch, position_patch
from selectlens.interpret.probes import residual_streams
from selectlens.model.gpt2 import SelectionTransformer

ROLE_BLOCKS = ("x→x", "x→y", "y→x", "y→y")


def role_blocks(patterns: Tensor | np.ndarray) -> dict[str, np.ndarray]:
    """Attention mass between token roles, per layer and head.

    ``patterns [L, B, H, T, T]`` (T = 2N, rows: queries) → for each block ``q→k`` an ``[L, H]``
    array: the mean over sequences and over the role's queries of the attention mass on keys of
    role k, and ``ci[q→k]`` ``[2, L, H]``, its 95% CI over sequences (a sequence's mean is one
    observation). ``null[...]`` holds the same quantity for uniform attention over the visible
    keys (x-query at 2i sees i+1 x-keys of 2i+1; y-query at 2i+1 sees i+1 of 2i+2), which the
    causal mask alone produces.
    """
    p = torch.as_tensor(patterns).double()
    T = p.shape[-1]
    is_x = torch.zeros(T, dtype=torch.bool)
    is_x[0::2] = True
    uniform = torch.tril(torch.ones(T, T, dtype=torch.float64))
    uniform = uniform / uniform.sum(-1, keepdim=True)  # [T, T]
    out: dict[str, np.ndarray] = {}
    for q_role, q_mask in (("x", is_x), ("y", ~is_x)):
        for k_role, k_mask in (("x", is_x), ("y", ~is_x)):
            per_seq = p[..., q_mask, :][..., k_mask].sum(-1).mean(-1)  # [L, B, H]
            mean = per_seq.mean(1)  # [L, H]
            S = per_seq.shape[1]
            half = Z95 * per_seq.std(1, unbiased=True) / S**0.5 if S > 1 else torch.full_like(mean, float("nan"))
            out[f"{q_role}→{k_role}"] = mean.numpy()
            out[f"ci[{q_role}→{k_role}]"] = torch.stack([mean - half, mean + half]).numpy()
            out[f"null[{q_role}→{k_role}]"] = np.array(float(uniform[q_mask][:, k_mask].sum(-1).mean()))
    return out


def interleaved_content_features(tokens: np.ndarray, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Content of interleaved tokens ``[S, 2N, d+1]`` → ``[S, 2N, d+3]``: the token's x entries and
    y entry as given, plus ‖x‖ and |y| (an x-token has y = 0, a y-token x = 0)."""
    x, y = tokens[..., :-1], tokens[..., -1:]
    feats = np.concatenate([x, y, np.linalg.norm(x, axis=-1, keepdims=True), np.abs(y)], axis=-1)
    return feats, list(names[:-1]) + [names[-1], "‖x‖", "|y|"]


def least_squares_weights(x: Tensor, y: Tensor) -> Tensor:
    """``[B, N, d]`` minimum-norm least-squares weights from the first n pairs, for n = 0..N−1
    (row n is what the x-token n could have computed; zeros at n = 0), in float64.

    Rows of later pairs are zeroed rather than dropped: zero rows change neither XᵀX nor XᵀY,
    so the pseudo-inverse solution is that of the prefix.
    """
    B, N, d = x.shape
    x64, y64 = x.double(), y.double()
    keep = torch.tril(torch.ones(N, N, dtype=torch.float64, device=x.device), diagonal=-1)  # [n, i]: i < n
    X = keep.view(1, N, N, 1) * x64.unsqueeze(1)  # [B, n, N, d]
    Y = keep.view(1, N, N) * y64.unsqueeze(1)  # [B, n, N]
    return (torch.linalg.pinv(X) @ Y.unsqueeze(-1)).squeeze(-1)  # [B, n, d]


@dataclass
class RawProbe:
    """Held-out scores of one probe target at every layer (0 = embedding) and x position."""

    name: str
    metric: str  # "r2" or "accuracy"
    scores: np.ndarray  # [n_layer + 1, N] (mean over the target's columns for R²)
    null: np.ndarray  # [n_layer + 1, N]: the same probe trained on shuffled labels
    chance: float  # the majority-class rate (accuracy), 0 for R²
    per_column: dict[str, np.ndarray] = field(default_factory=dict)  # column name -> [n_layer + 1, N]
    best_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95% bootstrap CI of the best cell's score

    def best(self) -> tuple[float, int, int]:
        """(score, layer, position) of the best cell (cells without a defined score are skipped)."""
        l, n = np.unravel_index(int(np.nanargmax(self.scores)), self.scores.shape)
        return float(self.scores[l, n]), int(l), int(n)


def _split_sequences(B: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(B)
    cut = int(0.75 * B)
    return perm[:cut], perm[cut:]


def _ridge_r2(a: np.ndarray, b: np.ndarray, ya: np.ndarray, yb: np.ndarray) -> np.ndarray:
    """Per-column held-out R² of a standardised ridge probe (multi-output), ``ya [n, C]``; NaN for a
    column that is constant on the held-out sequences (e.g. the posterior before any pair is seen)."""
    from sklearn.linear_model import Ridge

    pred = Ridge(alpha=1.0).fit(a, ya).predict(b).reshape(yb.shape)
    yb2 = yb.reshape(len(yb), -1)
    ss_tot = ((yb2 - yb2.mean(0)) ** 2).sum(0)
    ss_res = ((yb2 - pred.reshape(yb2.shape)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-12 * len(yb2), 1.0 - ss_res / ss_tot, np.nan)


def _logistic_accuracy(a: np.ndarray, b: np.ndarray, ya: np.ndarray, yb: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(ya)) < 2:
        return float((yb == ya[0]).mean())
    return float(LogisticRegression(max_iter=2000).fit(a, ya).score(b, yb))


def probe_grid(resid: np.ndarray, target: np.ndarray, metric: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Held-out probe scores at every layer and position, and the shuffled-label null.

    ``resid [L+1, B, N, D]``; ``target [B, C]`` (same at every position), ``[B, N, C]`` (per
    position) for R², or ``[B]`` class labels for accuracy. Sequences are split 3:1 (seeded);
    features are standardised on the training sequences. Returns ``(scores, null)``, each
    ``[L+1, N, C]`` for R² and ``[L+1, N]`` for accuracy. The null permutes the training
    labels across sequences.
    """
    from sklearn.preprocessing import StandardScaler

    Lp1, B, N, _ = resid.shape
    tr, te = _split_sequences(B, seed)
    shuffled = np.random.default_rng(seed + 1).permutation(tr)
    C = 1 if metric == "accuracy" else target.shape[-1]
    scores, null = np.zeros((Lp1, N, C)), np.zeros((Lp1, N, C))
    for l in range(Lp1):
        for n in range(N):
            scaler = StandardScaler().fit(resid[l, tr, n])
            a, b = scaler.transform(resid[l, tr, n]), scaler.transform(resid[l, te, n])
            t = target[:, n] if (metric == "r2" and target.ndim == 3) else target
            if metric == "accuracy":
                scores[l, n, 0] = _logistic_accuracy(a, b, t[tr], t[te])
                null[l, n, 0] = _logistic_accuracy(a, b, t[shuffled], t[te])
            else:
                scores[l, n] = _ridge_r2(a, b, t[tr], t[te])
                null[l, n] = _ridge_r2(a, b, t[shuffled], t[te])
    if metric == "accuracy":
        return scores[..., 0], null[..., 0]
    return scores, null


def best_cell_ci(resid: np.ndarray, target: np.ndarray, metric: str, layer: int, n: int, seed: int = 0,
                 boots: int = 300) -> tuple[float, float]:
    """95% percentile-bootstrap CI of one cell's held-out score, resampling the held-out sequences
    (the probe is refitted once on the same training sequences as :func:`probe_grid`)."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    tr, te = _split_sequences(resid.shape[1], seed)
    scaler = StandardScaler().fit(resid[layer, tr, n])
    a, b = scaler.transform(resid[layer, tr, n]), scaler.transform(resid[layer, te, n])
    t = target[:, n] if (metric == "r2" and target.ndim == 3) else target
    rng = np.random.default_rng(seed + 2)
    draws = rng.integers(0, len(te), size=(boots, len(te)))
    if metric == "accuracy":
        correct = LogisticRegression(max_iter=2000).fit(a, t[tr]).predict(b) == t[te]
        stats = correct[draws].mean(1)
    else:
        yb = t[te].reshape(len(te), -1)
        pred = Ridge(alpha=1.0).fit(a, t[tr]).predict(b).reshape(yb.shape)
        res, dev = (yb - pred)[draws], yb[draws] - yb[draws].mean(1, keepdims=True)  # [boots, n_te, C]
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = np.nanmean(1 - (res**2).sum(1) / (dev**2).sum(1), axis=-1)
    lo, hi = np.nanpercentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def _with_ci(probe: RawProbe, resid: np.ndarray, target: np.ndarray, seed: int) -> RawProbe:
    _, layer, n = probe.best()
    probe.best_ci = best_cell_ci(resid, target, probe.metric, layer, n, seed)
    return probe


def _r2_probe(name: str, resid: np.ndarray, target: np.ndarray, columns: list[str], seed: int) -> RawProbe:
    scores, null = probe_grid(resid, target, "r2", seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells (constant targets) stay NaN
        mean, null_mean = np.nanmean(scores, -1), np.nanmean(null, -1)
    probe = RawProbe(name, "r2", mean, null_mean, 0.0, {c: scores[..., i] for i, c in enumerate(columns)})
    return _with_ci(probe, resid, target, seed)


def _accuracy_probe(name: str, resid: np.ndarray, values: np.ndarray, seed: int) -> RawProbe | None:
    levels, labels = np.unique(values, return_inverse=True)
    if len(levels) < 2:
        return None
    scores, null = probe_grid(resid, labels, "accuracy", seed)
    probe = RawProbe(name, "accuracy", scores, null, float(np.bincount(labels).max() / len(labels)))
    return _with_ci(probe, resid, labels, seed)


@torch.no_grad()
def raw_probes(model: SelectionTransformer, batch: Any, noise_levels: list[float], noise_probs: list[float],
               seed: int = 0, readout: slice = slice(0, None, 2)) -> list[RawProbe]:
    """Probes from the residual stream at every layer and x-token of ``batch`` (a ``RawBatch``).

    Targets: ``w`` (R² per coordinate, mean), ``sigma`` (accuracy; regression sequences only),
    ``posterior[σ_k]`` (the exact Bayes posterior weight of each noise level given the pairs
    before x-token n; regression sequences), ``least_squares_w`` (the min-norm least-squares
    weights from those pairs, per coordinate), and ``task_type`` (accuracy) for
    ``linear_or_logistic``. Layer 0 is the embedding: a probe that already works there reads
    the token itself, not anything computed.
    """
    resid_all = residual_streams(model, batch.tokens)[:, :, readout].double().cpu().numpy()  # [L+1, B, N, D]
    reg = batch.is_regression.cpu().numpy()
    d = batch.x.shape[-1]
    coords = [f"w[{j}]" for j in range(d)]
    resid = resid_all[:, reg]
    x, y = batch.x[batch.is_regression], batch.y[batch.is_regression]
    probes = [_r2_probe("w", resid, batch.w[batch.is_regression].double().cpu().numpy(), coords, seed)]
    sigma = _accuracy_probe("sigma", resid, batch.sigma[batch.is_regression].cpu().numpy(), seed)
    if sigma is not None:
        probes.append(sigma)
        _, post = bayes_mixture(x, y, noise_levels, noise_probs)  # [B, N, K]
        probes.append(_r2_probe("posterior", resid, post.cpu().numpy(), [f"posterior[{s:g}]" for s in noise_levels], seed))
    probes.append(_r2_probe("least_squares_w", resid, least_squares_weights(x, y).cpu().numpy(), coords, seed))
    if not reg.all():
        task_type = _accuracy_probe("task_type", resid_all, reg.astype(int), seed)
        if task_type is not None:
            probes.append(task_type)
    return probes


@torch.no_grad()
def raw_activation_patching(model: SelectionTransformer, clean: Any, corrupt: Any,
                            position: int | None = None) -> dict[str, np.ndarray]:
    """Patch clean activations into the corrupted run; effect on the prediction at the last x-token
    (``position``: the last read-out position; default ``T − 2``, the last x-token of interleaved tokens).

    ``resid_output [n_layer, position + 1]``: ``blocks.{l}.hook_resid_pre`` patched at one position
    (positions after the read-out cannot reach it); ``head_output [n_layer, n_head]``: one
    head's ``z`` patched at every position. Effects are normalised: 0 = the corrupted
    prediction, 1 = the clean one (the mean per-sequence shift towards the clean prediction over
    the mean |clean − corrupt| gap). ``*_loss``: the patched run's squared error at the last
    x-token against the corrupted target.
    """
    L, H = model.spec.n_layer, model.spec.n_head
    q = clean.tokens.shape[1] - 2 if position is None else position  # the last read-out position

    def last(tokens: Tensor, hooks=()) -> Tensor:
        return model.run_with_hooks(tokens, fwd_hooks=list(hooks)).raw[:, q]

    _, cache = model.run_with_cache(clean.tokens, names_filter=lambda n: n.endswith("hook_resid_pre") or n.endswith("hook_z"))
    clean_pred, corrupt_pred = last(clean.tokens), last(corrupt.tokens)
    target = corrupt.target[:, -1]
    direction = (clean_pred - corrupt_pred).sign()
    denom = float((clean_pred - corrupt_pred).abs().mean()) or 1e-12

    def record(key: str, index: tuple[int, int], pred: Tensor) -> None:
        res[f"{key}_output"][index] = float(((pred - corrupt_pred) * direction).mean()) / denom
        res[f"{key}_loss"][index] = float(((pred - target) ** 2).mean())

    res = {k: np.zeros(s) for k, s in (("resid_output", (L, q + 1)), ("resid_loss", (L, q + 1)),
                                       ("head_output", (L, H)), ("head_loss", (L, H)))}
    for l in range(L):
        src = cache[f"blocks.{l}.hook_resid_pre"]
        for t in range(q + 1):
            record("resid", (l, t), last(corrupt.tokens, [(f"blocks.{l}.hook_resid_pre", position_patch(src, t))]))
        zsrc = cache[f"blocks.{l}.attn.hook_z"]
        for h in range(H):
            record("head", (l, h), last(corrupt.tokens, [(f"blocks.{l}.attn.hook_z", head_patch(zsrc, h))]))
    res["clean_loss"] = np.array(float(((clean_pred - clean.target[:, -1]) ** 2).mean()))
    res["corrupt_loss"] = np.array(float(((corrupt_pred - target) ** 2).mean()))
    res["gap"] = np.array(denom)
    return res
