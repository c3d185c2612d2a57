"""Sparse or dense (docs/design.md#sparse-or-dense): model selection between candidate *families*.

Per sequence, w is k-sparse with probability ``p_sparse`` (the support uniform over the size-k
subsets of the d coordinates, the values N(0, 1)), otherwise dense, N(0, I_d); labels
``y = xᵀw + σz``. The candidates are lasso fits (``lasso_alphas``) and ridge fits
(``ridge_alphas``) on the N training points, with scikit-learn's conventions and an unpenalised
intercept; the tokens are the selection layout's ``[ŷ_1 … ŷ_K, y]``. The batch's ``alpha`` holds
the latent type (1 = sparse, 2 = dense), so the selection baselines that fit a level estimator on
training data (context stacking) work unchanged.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor

from selectlens.config import positive_list
from selectlens.tasks.fitting import ridge_predictions
from selectlens.tasks.protocol import PairedBatches, TaskFamily
from selectlens.tasks.selection import SelectionLayoutData, SelectionTask, TaskBatch

SPARSE, DENSE = 1.0, 2.0  # the type codes in ``batch.alpha``


class SparseOrDenseData(SelectionLayoutData):
    """``data`` keys of sparse_or_dense."""

    task: str = "sparse_or_dense"
    d_d: int = Field(8, gt=0, le=12, description="Input dimension d (at most 12: the bound has C(d, k) + 1 components).")
    N: int = Field(16, ge=2, description="Training points (the candidates' fit) and test points per sequence.")
    p_sparse: float = Field(0.5, ge=0, le=1, description="Probability that w is k-sparse.")
    k: int = Field(2, ge=1, description="Non-zeros of a sparse w.")
    sigma: float = Field(0.5, gt=0, description="Noise sd σ.")
    lasso_alphas: list[float] = Field([0.1], description="Lasso penalties (scikit-learn Lasso(alpha)), one candidate each.")
    ridge_alphas: list[float] = Field([0.25], description="Ridge penalties (scikit-learn Ridge(alpha)), one candidate each.")

    @field_validator("lasso_alphas", "ridge_alphas")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        return positive_list("lasso_alphas / ridge_alphas", v)  # type: ignore[return-value]

    @model_validator(mode="after")
    def _k_fits(self) -> "SparseOrDenseData":
        if self.k > self.d_d:
            raise ValueError(f"data.k ({self.k}) must be at most data.d_d ({self.d_d})")
        return self

    @property
    def candidates(self) -> list[float]:
        return list(self.lasso_alphas) + list(self.ridge_alphas)

    def scales(self) -> dict[str, float]:
        return {"data.sigma": self.sigma, "data.ridge_alphas": max(self.ridge_alphas)}


def lasso_predictions(x_train: Tensor, y_train: Tensor, x_test: Tensor, alphas: list[float], *,
                      max_sweeps: int = 2000, tol: float = 1e-10) -> Tensor:
    """Lasso with an unpenalised intercept per sequence and per alpha (scikit-learn ``Lasso(alpha)``:
    minimise ``‖y − Xw − b‖²/(2n) + alpha·‖w‖₁``); ``[B, m, K]`` predictions at ``x_test``.

    Cyclic coordinate descent on the centred data, every sequence and penalty at once (float64),
    until no coefficient moves more than ``tol`` in a sweep; intercept ``ȳ − x̄ᵀw``.
    """
    X, y = x_train.double(), y_train.double()
    B, n, d = X.shape
    x_mean, y_mean = X.mean(1, keepdim=True), y.mean(1, keepdim=True)
    Xc, yc = X - x_mean, y - y_mean  # [B, n, d], [B, n]
    lam = torch.tensor(alphas, dtype=torch.float64, device=X.device).view(1, -1)  # [1, K]
    K = lam.shape[1]
    col_sq = (Xc**2).sum(1) / n  # [B, d]
    w = X.new_zeros(B, K, d)
    resid = yc.unsqueeze(1).expand(B, K, n).clone()  # [B, K, n]: yc − Xc w
    for _ in range(max_sweeps):
        moved = X.new_zeros(())
        for j in range(d):
            xj = Xc[:, :, j].unsqueeze(1)  # [B, 1, n]
            rho = (xj * resid).sum(-1) / n + col_sq[:, j : j + 1] * w[:, :, j]  # [B, K]
            new = torch.sign(rho) * (rho.abs() - lam).clamp(min=0) / col_sq[:, j : j + 1].clamp(min=1e-300)
            delta = new - w[:, :, j]
            resid -= delta.unsqueeze(-1) * xj
            w[:, :, j] = new
            moved = torch.maximum(moved, delta.abs().max())
        if float(moved) < tol:
            break
    intercept = y_mean - (x_mean @ w.mT).squeeze(1)  # [B, K]
    return (x_test.double() @ w.mT + intercept.unsqueeze(1)).to(x_test.dtype)


class SparseOrDenseTask(SelectionTask):
    """Per sequence a k-sparse or a dense w; lasso and ridge candidates; tokens of their predictions."""

    name = "sparse_or_dense"
    label = "sparse_or_dense"
    has_original_pipeline = False
    Data = SparseOrDenseData

    @classmethod
    def create(cls, data: SparseOrDenseData, *, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> "SparseOrDenseTask":
        return TaskFamily.create.__func__(cls, data, device=device, dtype=dtype)  # type: ignore[attr-defined]

    @property
    def candidate_labels(self) -> list[str]:
        return [f"lasso {a:g}" for a in self.data.lasso_alphas] + [f"ridge {a:g}" for a in self.data.ridge_alphas]

    def candidate_predictions(self, x_train: Tensor, y_train: Tensor, x_test: Tensor) -> Tensor:
        lasso = lasso_predictions(x_train, y_train, x_test, self.data.lasso_alphas)
        ridge = ridge_predictions(x_train, y_train, x_test, self.data.ridge_alphas)
        return torch.cat([lasso, ridge], dim=-1)  # [B, m, K]

    def sample_weights(self, batch_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(w [B, d], type [B])``: k-sparse (type 1) with probability p_sparse, else dense (type 2)."""
        B, d, k = batch_size, self.data.d_d, self.data.k
        kw = {"device": self.device, "dtype": self.dtype}
        sparse = torch.rand(B, generator=generator, device=self.device, dtype=torch.float64) < self.data.p_sparse
        dense_w = torch.randn(B, d, generator=generator, **kw)
        support = torch.rand(B, d, generator=generator, device=self.device).argsort(1)[:, :k]  # uniform k-subset
        mask = torch.zeros(B, d, dtype=torch.bool, device=self.device).scatter_(1, support, True)
        w = torch.where(sparse.unsqueeze(-1), dense_w * mask, dense_w)
        return w, torch.where(sparse, SPARSE, DENSE).to(self.dtype)

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskBatch:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        B, N, d = batch_size, self.data.N, self.data.d_d
        kw = {"device": self.device, "dtype": self.dtype}
        w, kind = self.sample_weights(B, generator)
        x_train = torch.randn(B, N, d, generator=generator, **kw)
        x_test = torch.randn(B, N, d, generator=generator, **kw)
        noise = torch.randn(2, B, N, generator=generator, **kw)
        y_train = (x_train @ w.unsqueeze(-1)).squeeze(-1) + self.data.sigma * noise[0]
        y_test = (x_test @ w.unsqueeze(-1)).squeeze(-1) + self.data.sigma * noise[1]
        return self.build(kind, x_train, y_train, x_test, y_test, w)

    def groups(self, batch: TaskBatch) -> dict[str, Tensor]:
        out = {"all": torch.ones(len(batch), dtype=torch.bool, device=batch.alpha.device)}
        for name, code in (("sparse", SPARSE), ("dense", DENSE)):
            mask = batch.alpha == code
            if bool(mask.any()):
                out[name] = mask
        return out

    def workspace_bytes(self) -> int:
        K, d, N = len(self.data.candidates), self.data.d_d, self.data.N
        return (K * d * d + 3 * K * N) * 8

    def paired_batches(self, n: int, generator: torch.Generator) -> PairedBatches:
        """Sequences that differ only in the type: the same x and noise; the sparse w is the dense w
        kept on a uniform size-k support."""
        N, d, k = self.data.N, self.data.d_d, self.data.k
        kw = {"device": self.device, "dtype": self.dtype}
        dense_w = torch.randn(n, d, generator=generator, **kw)
        support = torch.rand(n, d, generator=generator, device=self.device).argsort(1)[:, :k]
        sparse_w = dense_w * torch.zeros(n, d, dtype=torch.bool, device=self.device).scatter_(1, support, True)
        x_train = torch.randn(n, N, d, generator=generator, **kw)
        x_test = torch.randn(n, N, d, generator=generator, **kw)
        noise = torch.randn(2, n, N, generator=generator, **kw)

        def build(w: Tensor, code: float) -> TaskBatch:
            ys = [(x @ w.unsqueeze(-1)).squeeze(-1) + self.data.sigma * z for x, z in ((x_train, noise[0]), (x_test, noise[1]))]
            return self.build(torch.full((n,), code, **kw), x_train, ys[0], x_test, ys[1], w)

        return PairedBatches(build(sparse_w, SPARSE), build(dense_w, DENSE), "type (1 sparse, 2 dense)", SPARSE, DENSE)


def n_components(d: int, k: int) -> int:
    """Components of the full-information bound: every size-k support and the dense model."""
    return math.comb(d, k) + 1
