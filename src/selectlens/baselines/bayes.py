"""Reference predictors for the regression selection task that see more than the tokens (docs/design.md#full-information-bound).

* :func:`bayes_full_information` — a **bound**: the exact posterior-mean predictor given x_train,
  y_train and the N−1 visible test pairs (x and y), under the true prior ``w ~ N(0, I_d)`` and noise
  sd ``σ_k = noise_scale·α_k`` with a uniform prior over the levels. Every token is a function of that
  information, so no predictor of the tokens beats it in expectation.
* :func:`bayes_matched_ridge` — **latent**: ridge (no intercept) with ``λ = σ²`` for the sequence's
  true α, fitted on the training pairs only.
* :func:`noise_floor_losses` — **bound**: the expected squared error of knowing w, ``σ(α)²``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from selectlens.baselines.common import Predictor
from selectlens.tasks.selection import TaskBatch


def _full_information_data(batch: TaskBatch) -> tuple[Tensor, Tensor, Tensor]:
    """``(X [B, 2N−1, d], Y [B, 2N−1], x_q [B, d])`` in float64: the training pairs, the visible test pairs, the query."""
    X = torch.cat([batch.x_train, batch.x_test[:, :-1]], dim=1).double()
    Y = torch.cat([batch.y_train, batch.y_test[:, :-1]], dim=1).double()
    return X, Y, batch.x_test[:, -1].double()


def level_posterior_means(X: Tensor, Y: Tensor, x_q: Tensor, sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """Per noise level k: the posterior mean ``m_k = x_qᵀ A_k⁻¹ XᵀY`` (ridge, λ = σ_k², no intercept) and the
    log marginal likelihood ``log p(Y | X, σ_k)`` up to a constant shared by all levels.

    ``X [B, n, d]``, ``Y [B, n]``, ``x_q [B, d]``, ``sigmas [L]`` → ``m [B, L]``, ``log_p [B, L]``, with
    ``A_k = XᵀX + σ_k² I`` and ``log p_k = −(‖Y‖² − YᵀX A_k⁻¹ XᵀY)/(2σ_k²) − ½[n log σ_k² + log det(I + XᵀX/σ_k²)]``.
    """
    B, n, d = X.shape
    s2 = sigmas.double().to(X.device).view(1, -1, 1, 1) ** 2  # [1, L, 1, 1]
    XtX = (X.mT @ X).unsqueeze(1)  # [B, 1, d, d]
    XtY = (X.mT @ Y.unsqueeze(-1)).unsqueeze(1)  # [B, 1, d, 1]
    eye = torch.eye(d, dtype=X.dtype, device=X.device)
    chol = torch.linalg.cholesky(XtX + s2 * eye)  # [B, L, d, d]
    sol = torch.cholesky_solve(XtY.expand(-1, s2.shape[1], -1, -1), chol)  # [B, L, d, 1]
    m = (x_q.view(B, 1, 1, d) @ sol).view(B, -1)
    fit = (XtY.mT @ sol).view(B, -1)  # YᵀX A⁻¹ XᵀY
    s2f = s2.view(1, -1)
    logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) - d * s2f.log()  # log det(I + XᵀX/σ²)
    log_p = -((Y**2).sum(1, keepdim=True) - fit) / (2 * s2f) - 0.5 * (n * s2f.log() + logdet)
    return m, log_p


def bayes_full_information(levels: list[float], noise_scale: float) -> Predictor:
    """BOUND: the exact posterior mixture over the noise levels given all the data behind the tokens."""
    sigmas = torch.tensor([noise_scale * a for a in levels], dtype=torch.float64)
    log_prior = -math.log(len(levels))

    def predict(batch: TaskBatch) -> Tensor:
        m, log_p = level_posterior_means(*_full_information_data(batch), sigmas)
        weights = torch.softmax(log_p + log_prior, dim=1)
        return (weights * m).sum(1).to(batch.tokens.dtype)

    return predict


def bayes_matched_ridge(noise_scale: float) -> Predictor:
    """LATENT: ridge on the training pairs (no intercept) with λ = (noise_scale·α)² for the true α."""

    def predict(batch: TaskBatch) -> Tensor:
        X, Y = batch.x_train.double(), batch.y_train.double()
        d = X.shape[-1]
        lam = (noise_scale * batch.alpha.double()).view(-1, 1, 1) ** 2
        A = X.mT @ X + lam * torch.eye(d, dtype=X.dtype, device=X.device)
        w = torch.linalg.solve(A, X.mT @ Y.unsqueeze(-1)).squeeze(-1)  # [B, d]
        return (batch.x_test[:, -1].double() * w).sum(-1).to(batch.tokens.dtype)

    return predict


def noise_floor_losses(batch: TaskBatch, noise_scale: float) -> Tensor:
    """BOUND ``[B]``: the expected squared error of the true ``x·w``, i.e. the noise variance ``(noise_scale·α)²``."""
    return (noise_scale * batch.alpha.double()) ** 2
