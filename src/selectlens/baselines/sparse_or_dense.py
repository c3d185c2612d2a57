"""Baselines of sparse_or_dense (docs/design.md#sparse-dense-bound): the selection baselines, the latent
true-type candidate, and the full-information Bayes bound over the dense model and every size-k support."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from selectlens.baselines.common import Predictor, candidate_predictions, pick
from selectlens.baselines.selection import SelectionFit, SelectionSuite
from selectlens.baselines.suite import register_suite
from selectlens.tasks.selection import TaskBatch
from selectlens.tasks.sparse_or_dense import SPARSE, SparseOrDenseTask


def component_log_evidence(X: Tensor, Y: Tensor, x_q: Tensor, sigma: float) -> tuple[Tensor, Tensor]:
    """For the Gaussian linear model ``Y = Xw + σz``, ``w ~ N(0, I)``: ``(m [B], log p [B])`` with
    ``A = XᵀX + σ²I``, ``m = x_qᵀA⁻¹XᵀY`` and ``log p = −(‖Y‖² − YᵀXA⁻¹XᵀY)/(2σ²) − ½[n log σ² + log det(I + XᵀX/σ²)]``."""
    s2 = sigma**2
    n, c = X.shape[1], X.shape[2]
    gram = X.mT @ X  # [B, c, c]
    A = gram + s2 * torch.eye(c, dtype=X.dtype, device=X.device)
    rhs = X.mT @ Y.unsqueeze(-1)  # [B, c, 1]
    sol = torch.linalg.solve(A, rhs)  # [B, c, 1]
    m = (x_q.unsqueeze(1) @ sol).reshape(-1)
    fit = (rhs.mT @ sol).reshape(-1)
    logdet = torch.linalg.slogdet(torch.eye(c, dtype=X.dtype, device=X.device) + gram / s2)[1]
    return m, -((Y**2).sum(-1) - fit) / (2 * s2) - 0.5 * (n * math.log(s2) + logdet)


def sparse_dense_posterior_mean(X: Tensor, Y: Tensor, x_q: Tensor, sigma: float, k: int, p_sparse: float) -> Tensor:
    """``[B]`` posterior mean of ``x_qᵀw`` given ``(X [B, n, d], Y [B, n])``: a mixture over the dense model
    (prior weight 1 − p_sparse) and every size-k support S (p_sparse / C(d, k) each), float64."""
    X, Y, x_q = X.double(), Y.double(), x_q.double()
    d = X.shape[-1]
    means, logs = [], []
    supports = list(itertools.combinations(range(d), k))
    if p_sparse < 1:
        m, lp = component_log_evidence(X, Y, x_q, sigma)
        means.append(m)
        logs.append(lp + math.log(1 - p_sparse))
    if p_sparse > 0:
        for S in supports:
            cols = list(S)
            m, lp = component_log_evidence(X[..., cols], Y, x_q[..., cols], sigma)
            means.append(m)
            logs.append(lp + math.log(p_sparse / len(supports)))
    weights = torch.softmax(torch.stack(logs, -1), dim=-1)
    return (weights * torch.stack(means, -1)).sum(-1)


def bayes_full_information(sigma: float, k: int, p_sparse: float) -> Predictor:
    """BOUND: the exact posterior mean given the N training pairs and the N−1 visible test pairs (x and y)."""

    def predict(batch: TaskBatch) -> Tensor:
        X = torch.cat([batch.x_train, batch.x_test[:, :-1]], dim=1)
        Y = torch.cat([batch.y_train, batch.y_test[:, :-1]], dim=1)
        return sparse_dense_posterior_mean(X, Y, batch.x_test[:, -1], sigma, k, p_sparse).to(batch.target.dtype)

    return predict


def true_type_candidate(n_lasso: int) -> Predictor:
    """LATENT type: the first lasso candidate on sparse sequences, the first ridge candidate on dense ones."""

    def predict(batch: TaskBatch) -> Tensor:
        index = torch.where(batch.alpha == SPARSE, 0, n_lasso)
        return pick(candidate_predictions(batch), index)

    return predict


@register_suite(SparseOrDenseTask)
class SparseOrDenseSuite(SelectionSuite):
    """Selection baselines (candidates, context validation, softmax ensemble, stacking; oracles), the latent
    true-type candidate, the full-information bound and the noise floor σ²."""

    SEES = {**SelectionSuite.SEES, "true_type_candidate": "latent", "bayes_full_information": "bound"}
    bound = "bayes_full_information"

    def references(self, fit: SelectionFit) -> dict[str, Predictor]:
        data = self.task.data
        return {"true_type_candidate": true_type_candidate(len(data.lasso_alphas)),
                "bayes_full_information": bayes_full_information(data.sigma, data.k, data.p_sparse)}

    def extra_losses(self, batch: TaskBatch, metric: str) -> dict[str, Tensor]:
        return {"noise_floor": torch.full((len(batch),), self.task.data.sigma**2, dtype=torch.float64,
                                          device=batch.tokens.device)}
