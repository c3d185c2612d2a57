"""Linear probes from the residual stream, at every layer and position.

Targets: the latent α (logistic probe, held-out accuracy), each candidate's
running context error (ridge probe, held-out R²), and the target (ridge, R²).
"Layer" l in 0..n_layer is the residual stream entering block l
(``blocks.{l}.hook_resid_pre``); l = n_layer is the final residual stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from selectlens.baselines import pointwise_loss
from selectlens.model.gpt2 import SelectionTransformer
from selectlens.tasks.selection import TaskBatch


@torch.no_grad()
def residual_streams(model: SelectionTransformer, tokens: Tensor) -> Tensor:
    """``[n_layer + 1, B, T, d_model]``: resid_pre of each block, then the last block's resid_post."""
    L = model.spec.n_layer
    names = [f"blocks.{l}.hook_resid_pre" for l in range(L)] + [f"blocks.{L - 1}.hook_resid_post"]
    _, cache = model.run_with_cache(tokens, names_filter=names)
    return torch.stack([cache[n] for n in names])


def running_context_error(batch: TaskBatch, kind: str) -> Tensor:
    """``[B, T, K]``: candidate k's mean loss on the labels visible at position t (positions ≤ t, never the last)."""
    preds, labels = batch.tokens[..., :-1], batch.tokens[..., -1:]  # [B, T, K], [B, T, 1]
    T = preds.shape[1]
    visible = torch.ones(T, device=preds.device)
    visible[-1] = 0.0  # the last label is masked
    loss = pointwise_loss(preds, labels, kind) * visible.view(1, T, 1)
    counts = visible.cumsum(0).clamp(min=1).view(1, T, 1)
    return loss.cumsum(dim=1) / counts


@dataclass
class ProbeResult:
    name: str
    metric: str  # "accuracy" or "r2"
    scores: np.ndarray  # [n_layer + 1, T]
    chance: float  # accuracy of the majority class, or 0 for R²


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    cut = int(0.75 * n)
    return perm[:cut], perm[cut:]


def probe_scores(resid: Tensor, y: np.ndarray, kind: str, seed: int = 0, ridge_alpha: float = 1.0) -> np.ndarray:
    """Held-out score of a linear probe at every layer and position; ``y`` is ``[B]`` or ``[B, T]``."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.preprocessing import StandardScaler

    Lp1, B, T, _ = resid.shape
    tr, te = _split(B, seed)
    X = resid.double().cpu().numpy()
    out = np.zeros((Lp1, T))
    for l in range(Lp1):
        for t in range(T):
            target = y[:, t] if y.ndim == 2 else y
            scaler = StandardScaler().fit(X[l, tr, t])
            a, b = scaler.transform(X[l, tr, t]), scaler.transform(X[l, te, t])
            if kind == "classification":
                clf = LogisticRegression(max_iter=2000).fit(a, target[tr])
                out[l, t] = clf.score(b, target[te])
            else:
                reg = Ridge(alpha=ridge_alpha).fit(a, target[tr])
                out[l, t] = reg.score(b, target[te])
    return out


def run_probes(model: SelectionTransformer, batch: TaskBatch, kind: str, candidates: list[float], seed: int = 0) -> list[ProbeResult]:
    """Probes for α, each candidate's running context error, and the target."""
    resid = residual_streams(model, batch.tokens)
    alpha = batch.alpha.cpu().numpy()
    levels, alpha_class = np.unique(alpha, return_inverse=True)
    results = []
    if len(levels) > 1:
        chance = float(np.bincount(alpha_class).max() / len(alpha_class))
        results.append(ProbeResult("alpha", "accuracy", probe_scores(resid, alpha_class, "classification", seed), chance))
    err = running_context_error(batch, kind).cpu().double().numpy()  # [B, T, K]
    for k, c in enumerate(candidates):
        results.append(ProbeResult(f"context_error[{c:g}]", "r2", probe_scores(resid, np.log(err[..., k] + 1e-8), "regression", seed), 0.0))
    results.append(ProbeResult("target", "r2", probe_scores(resid, batch.target.cpu().double().numpy(), "regression", seed), 0.0))
    return results
