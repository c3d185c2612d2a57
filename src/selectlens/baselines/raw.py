"""Exact baselines for the raw-data tasks (either token layout), every prefix at once (docs/design.md#raw-baselines).

Every predictor is ``predict(batch: RawBatch) -> Tensor [B, N]``: entry ``[b, i]`` predicts
``y_i`` at x-token i from the i earlier pairs ``(x_0, y_0) … (x_{i−1}, y_{i−1})``, like the
model's ``model(tokens).raw[:, 0::2]``. With no pair seen (i = 0) every predictor says 0, the
prior mean. They read ``batch.x [B, N, d]`` and ``batch.y [B, N]`` (what the tokens hold);
``oracle_sigma_ridge`` and ``type_oracle`` also read the latent ``batch.sigma`` /
``batch.is_regression``. Arithmetic is float64 on the batch's device; predictions come back
in the dtype of ``batch.x``.

What each predictor sees is in ``RAW_BASELINE_SEES``:

* ``honest`` — only the visible pairs, like the model (``bayes_posterior_mixture`` is the
  Bayes-optimal honest predictor for ``mixed_noise_regression``: nothing that sees only the
  pairs has lower expected squared error);
* ``latent`` — also the sequence's latent σ or task type (``oracle_sigma_ridge`` is Bai et
  al.'s "Bayes" line: Bayes-optimal *given* σ).

Ridge and the Bayes mixture run as a recursive-least-squares (Kalman) filter over the
sequence: one rank-one Sherman–Morrison update of ``A⁻¹ = (XᵀX + λI)⁻¹`` per pair (batch-last
layout, so each update is a handful of long vector operations), the
ridge weights, the penalised residual ``‖Y‖² − YᵀX A⁻¹ XᵀY`` and ``log det(I + XᵀX/λ)``
(matrix determinant lemma) carried along. That is the same quantity as docs/design.md#bayes-mixture's
cumulative sums + a batched solve per prefix, in exact arithmetic, at a fifth of the cost
and O(B·K·d²) memory instead of O(B·N·K·d²) (tests: within 1e-9 of direct per-prefix solves).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from selectlens.tasks.fitting import logistic_fit

from selectlens.baselines.suite import BaselineFit, BaselineSuite, register_suite, suite_for
from selectlens.tasks.protocol import STACKING_STREAM, make_generator, stream_seed
from selectlens.tasks.raw import LinearOrLogisticTask, MixedNoiseRegressionTask, RawBatch, RawTask

RawPredictor = Callable[["RawBatch"], Tensor]

HONEST, LATENT = "honest", "latent"
#: The penalty of the logistic-regression baseline (``C·Σ logloss + ½‖w‖²``, unpenalized intercept).
#: Labels ``sign(xᵀw)`` are separable, so some penalty is needed for a finite fit. C = 5 had the lowest
#: all-position MSE of 2p − 1 on classification sequences of ``linear_or_logistic_cpu`` (d = 5, N = 20),
#: drawn for that choice only: 2,000 sequences (generator seed 7): C = 0.3 0.896, 1 0.793, 3 0.752,
#: 10 0.752, 100 0.798; then 6,000 (seed 8): C = 2 0.761, 3 0.751, 5 0.746 ± 0.004, 10 0.750.
LOGISTIC_C = 5.0

#: What each raw baseline sees ("honest" = only the visible pairs; "latent" = also σ or the type).
RAW_BASELINE_SEES: dict[str, str] = {
    "least_squares": HONEST,
    "ridge[": HONEST,  # one per noise level, e.g. ridge[0.1]
    "bayes_posterior_mixture": HONEST,
    "oracle_sigma_ridge": LATENT,
    "best_single_ridge": HONEST,  # one λ per n for every sequence, chosen on training data: a rule that does not select
    "nearest_neighbours_3": HONEST,
    "averaging": HONEST,
    "logistic_regression": HONEST,
    "type_detector": HONEST,
    "type_oracle": LATENT,
}


def _f64(t: Tensor) -> Tensor:
    return t.to(torch.float64)


_CHUNK_ELEMENTS = 1 << 23  # float64 elements of A⁻¹ per chunk (64 MiB)


def _chunk_size(K: int, d: int) -> int:
    """Sequences per chunk of the ridge filter with K penalties in dimension d (``A⁻¹ [K, d, d, chunk]``)."""
    return max(1, _CHUNK_ELEMENTS // (K * d * d))


def ridge_filter(x: Tensor, y: Tensor, lam: Tensor, *, moments: bool = False) -> tuple[Tensor, ...]:
    """Ridge regression (no intercept) on every prefix, for several penalties at once.

    For prefix n (pairs 0..n−1, n = 0..N−1) and penalty λ_k, with ``A = XᵀX + λ_k I``:

    Args:
        x: ``[B, N, d]`` inputs; y: ``[B, N]`` labels.
        lam: ``[K]`` or ``[B, K]`` positive penalties.

    Returns:
        ``pred [B, N, K]``: ``x_nᵀ A⁻¹ XᵀY`` (0 at n = 0);
        ``rss [B, N, K]``: ``‖Y‖² − YᵀX A⁻¹ XᵀY`` (= min_w ‖Y − Xw‖² + λ‖w‖²);
        ``logdet [B, N, K]``: ``log det(I_d + XᵀX/λ)``. All float64.
        With ``moments``, also ``coef [B, N, K, d]``: the ridge weights ``A⁻¹ XᵀY`` of prefix n, and
        ``trace [B, N, K]``: ``tr A⁻¹`` (what the posterior's spread needs, :func:`bayes_mixture_risk`).

    Sequences are processed ``chunk`` at a time, so ``A⁻¹ [K, d, d, chunk]`` stays under ~64 MiB.
    """
    B, _, d = x.shape
    chunk = _chunk_size(lam.shape[-1] if lam.dim() == 2 else lam.numel(), d)
    if B <= chunk:
        return _ridge_filter_chunk(x, y, lam, moments)
    parts = [_ridge_filter_chunk(x[i : i + chunk], y[i : i + chunk], lam if lam.dim() == 1 else lam[i : i + chunk],
                                 moments)
             for i in range(0, B, chunk)]
    return tuple(torch.cat(t) for t in zip(*parts))  # type: ignore[return-value]


def _ridge_filter_chunk(x: Tensor, y: Tensor, lam: Tensor, moments: bool = False) -> tuple[Tensor, ...]:
    B, N, d = x.shape
    X = _f64(x).permute(1, 2, 0).contiguous()  # [N, d, B]: batch last, so every op is a long vector op
    Y = _f64(y).T.contiguous()  # [N, B]
    lam = _f64(lam).to(X.device)
    lam = (lam.unsqueeze(-1).expand(-1, B) if lam.dim() == 1 else lam.T).contiguous()  # [K, B]
    K = lam.shape[0]
    P = X.new_zeros(K, d, d, B)  # A⁻¹ of the current prefix; empty prefix: I/λ
    P.diagonal(dim1=1, dim2=2).copy_((1 / lam).unsqueeze(-1).expand(K, B, d))
    w = X.new_zeros(K, d, B)  # ridge weights of the current prefix
    pred, rss, logdet = (X.new_zeros(N, K, B) for _ in range(3))
    coef, trace = (X.new_zeros(N, K, d, B), X.new_zeros(N, K, B)) if moments else (None, None)
    for n in range(N):
        xn = X[n]  # [d, B]
        pred[n] = (w * xn).sum(1)
        if moments:
            coef[n] = w
            trace[n] = P.diagonal(dim1=1, dim2=2).sum(-1)
        if n + 1 == N:
            break
        Px = (P * xn).sum(2)  # [K, d, B]: A⁻¹ x_n
        c = 1.0 + (Px * xn).sum(1)  # [K, B]: 1 + x_nᵀ A⁻¹ x_n
        err = Y[n] - pred[n]  # [K, B]: one-step prediction error
        g = Px / c.unsqueeze(1)  # [K, d, B]: gain
        w.addcmul_(g, err.unsqueeze(1))
        P.addcmul_(g.unsqueeze(2), Px.unsqueeze(1), value=-1.0)  # Sherman–Morrison
        rss[n + 1] = rss[n] + err**2 / c
        logdet[n + 1] = logdet[n] + c.log()  # matrix determinant lemma
    out = (pred.permute(2, 0, 1), rss.permute(2, 0, 1), logdet.permute(2, 0, 1))  # each [B, N, K]
    if moments:
        out += (coef.permute(3, 0, 1, 2), trace.permute(2, 0, 1))  # [B, N, K, d], [B, N, K]
    return out


def noise_log_evidence(rss: Tensor, logdet: Tensor, sigmas: Tensor) -> Tensor:
    """``[B, N, K]`` log marginal likelihood of each prefix under each noise level, up to a
    constant shared by the levels: ``Y ~ N(0, XXᵀ/d + σ_k² I_n)`` gives
    ``−rss_k/(2σ_k²) − ½[n log σ_k² + log det(I_d + XᵀX/(dσ_k²))]`` (docs/design.md#bayes-mixture), where
    ``rss``/``logdet`` come from ``ridge_filter`` at λ_k = dσ_k²."""
    s2 = _f64(sigmas).to(rss.device) ** 2  # [K]
    n = torch.arange(rss.shape[1], dtype=torch.float64, device=rss.device).view(1, -1, 1)
    return -rss / (2 * s2) - 0.5 * (n * s2.log() + logdet)


def bayes_mixture(x: Tensor, y: Tensor, sigmas: list[float], probs: list[float]) -> tuple[Tensor, Tensor]:
    """The exact posterior mean of ``y_n`` under the prior of ``mixed_noise_regression``.

    ``w ~ N(0, I_d)``, ``y = xᵀw/√d + σz`` with σ = ``sigmas[k]`` with probability ``probs[k]``.

    Returns:
        ``pred [B, N]`` (float64): ``Σ_k π_k(n) · ridge_k``, ridge at λ_k = dσ_k²;
        ``posterior [B, N, K]`` (float64): ``π_k(n) = P(σ = σ_k | first n pairs)``.
    """
    d = x.shape[-1]
    s = torch.tensor(sigmas, dtype=torch.float64, device=x.device)
    log_prior = torch.tensor(probs, dtype=torch.float64, device=x.device).log()
    pred, rss, logdet = ridge_filter(x, y, d * s**2)
    posterior = torch.softmax(noise_log_evidence(rss, logdet, s) + log_prior, dim=-1)
    return (posterior * pred).sum(-1), posterior


def bayes_mixture_risk(x: Tensor, y: Tensor, sigmas: list[float], probs: list[float], *,
                       observed: bool = False) -> Tensor:
    """``[B, N]`` (float64): the Bayes posterior's risk at read-out n given the first n pairs, for a query
    x_n ~ N(0, I_d) not yet seen — a function of the earlier pairs alone.

    Under the prior of :func:`bayes_mixture` (``v = w/√d ~ N(0, I_d/d)``, σ = σ_k with probability π_k), the
    posterior of v given σ_k and the first n pairs is ``N(μ_k, σ_k² A_k⁻¹)`` with ``A_k = XᵀX + dσ_k² I``
    and ``μ_k`` the ridge weights at λ_k = dσ_k². The mixture posterior's covariance is
    ``C = Σ_k π_k(n)(σ_k² A_k⁻¹ + (μ_k − μ̄)(μ_k − μ̄)ᵀ)`` (μ̄ = Σ_k π_k(n) μ_k), so the posterior mean's expected
    squared error against the label's mean ``x_nᵀv`` is ``E x_nᵀ C x_n = tr C``; against the label itself
    (``observed``) it adds the posterior mean of σ², ``Σ_k π_k(n) σ_k²``. Averaging over the query keeps the
    weight bounded where x_n ≈ 0 (``training.position_weights: inverse_bayes_risk``, docs/design.md#position-weights).
    Sequences go through in chunks, so the per-prefix posterior means never exist for the whole batch at once.
    """
    B, _, d = x.shape
    chunk = _chunk_size(len(sigmas), d)
    if B > chunk:
        return torch.cat([bayes_mixture_risk(x[i : i + chunk], y[i : i + chunk], sigmas, probs, observed=observed)
                          for i in range(0, B, chunk)])
    s2 = torch.tensor(sigmas, dtype=torch.float64, device=x.device) ** 2
    log_prior = torch.tensor(probs, dtype=torch.float64, device=x.device).log()
    _, rss, logdet, coef, trace = ridge_filter(x, y, d * s2, moments=True)
    post = torch.softmax(noise_log_evidence(rss, logdet, s2.sqrt()) + log_prior, dim=-1)  # [B, N, K]
    mean = (post.unsqueeze(-1) * coef).sum(-2, keepdim=True)  # [B, N, 1, d]: μ̄
    spread = s2 * trace + ((coef - mean) ** 2).sum(-1)  # [B, N, K]: σ_k² tr A_k⁻¹ + |μ_k − μ̄|², each ≥ 0
    risk = (post * spread).sum(-1)
    return risk + (post * s2).sum(-1) if observed else risk


def least_squares(x: Tensor, y: Tensor) -> Tensor:
    """``[B, N]`` minimum-norm least squares on every prefix: ``x_nᵀ X⁺ Y`` (float64).

    For n ≥ d it solves the normal equations ``XᵀX β = XᵀY`` (cumulative sums); for n < d,
    where XᵀX is singular, the kernel form ``x_nᵀ Xᵀ (XXᵀ)⁻¹ Y`` over the n × n Gram matrix,
    which is the minimum-norm solution whenever X has full row rank (almost surely for
    continuous x). Prefix n = 0 predicts 0. Sequences go ``chunk`` at a time (bounded memory).
    """
    B, N, d = x.shape
    chunk = max(1, _CHUNK_ELEMENTS // (N * d * d))
    return torch.cat([_least_squares_chunk(x[i : i + chunk], y[i : i + chunk]) for i in range(0, B, chunk)])


def _least_squares_chunk(x: Tensor, y: Tensor) -> Tensor:
    X, Y = _f64(x), _f64(y)
    B, N, d = X.shape
    out = X.new_zeros(B, N)
    if N > d:  # prefixes n = d .. N−1
        xx = X.unsqueeze(-1) * X.unsqueeze(-2)  # [B, N, d, d]
        gram = (torch.cumsum(xx, 1) - xx)[:, d:]  # [B, N−d, d, d]: Σ_{i<n} x_i x_iᵀ
        xy = X * Y.unsqueeze(-1)
        rhs = (torch.cumsum(xy, 1) - xy)[:, d:]  # [B, N−d, d]
        beta = torch.linalg.solve(gram, rhs.unsqueeze(-1)).squeeze(-1)
        out[:, d:] = (beta * X[:, d:]).sum(-1)
    small = min(d, N)  # prefixes n = 1 .. small−1, in the kernel form padded to (small−1)²
    for n in range(1, small):
        Xn = X[:, :n]  # [B, n, d]
        kernel = Xn @ Xn.mT  # [B, n, n]
        alpha = torch.linalg.solve(kernel, Y[:, :n].unsqueeze(-1))  # [B, n, 1]
        out[:, n] = ((Xn @ X[:, n].unsqueeze(-1)) * alpha).sum((-2, -1))
    return out


def nearest_neighbours(x: Tensor, y: Tensor, k: int = 3) -> Tensor:
    """``[B, N]``: the mean y of the k nearest earlier x_i (Euclidean), fewer while n < k; 0 at n = 0."""
    X, Y = _f64(x), _f64(y)
    B, N, _ = X.shape
    dist = torch.cdist(X, X)  # [B, N (query), N (pair)]
    later = torch.ones(N, N, dtype=torch.bool, device=X.device).triu()  # pair j ≥ query n: not seen
    dist = dist.masked_fill(later, math.inf)
    kk = min(k, N)
    near, idx = dist.topk(kk, dim=-1, largest=False)  # [B, N, kk]
    seen = near.isfinite()
    vals = Y.unsqueeze(1).expand(B, N, N).gather(-1, idx) * seen
    return vals.sum(-1) / seen.sum(-1).clamp(min=1)


def averaging(x: Tensor, y: Tensor) -> Tensor:
    """``[B, N]``: ``x_nᵀ · mean_{i<n} x_i y_i`` (Garg et al.'s averaging estimator); 0 at n = 0."""
    X, Y = _f64(x), _f64(y)
    xy = X * Y.unsqueeze(-1)
    mean = (torch.cumsum(xy, 1) - xy) / torch.arange(X.shape[1], device=X.device).clamp(min=1).view(1, -1, 1)
    return (mean * X).sum(-1)


def logistic_regression(x: Tensor, y: Tensor, C: float = LOGISTIC_C) -> Tensor:
    """``[B, N]``: ``2p − 1`` from L2 logistic regression (``tasks.fitting.logistic_fit``: penalty
    ``C``, unpenalized intercept) fitted on each prefix's labels ``y > 0``; 0 at n = 0.

    A prefix whose labels are all one class has no finite fit; it predicts that class (±1).
    """
    X, Y = _f64(x), _f64(y)
    B, N, _ = X.shape
    out = X.new_zeros(B, N)
    for n in range(1, N):
        theta = logistic_fit(X[:, :n], (Y[:, :n] > 0).double(), [C])[:, 0]  # [B, d + 1]
        logit = (theta[:, :-1] * X[:, n]).sum(-1) + theta[:, -1]
        out[:, n] = 2 * torch.sigmoid(logit) - 1
    return out


def labels_look_binary(y: Tensor) -> Tensor:
    """``[B, N]`` bool: every visible label (pairs 0..n−1) is exactly ±1, and n ≥ 1."""
    binary = (y.abs() == 1).to(torch.int64)  # [B, N]
    seen_all = torch.cumprod(binary, dim=1)  # [B, N]: 1 while pairs 0..i are all ±1
    out = torch.zeros_like(y, dtype=torch.bool)
    out[:, 1:] = seen_all[:, :-1].bool()
    return out


def _per_level_ridge(sigmas: list[float]) -> dict[str, RawPredictor]:
    """``ridge[σ_k]`` at λ_k = dσ_k², the Bayes predictor for noise level k."""

    def make(s: float) -> RawPredictor:
        def predict(batch: "RawBatch") -> Tensor:
            d = batch.x.shape[-1]
            lam = torch.tensor([d * s * s], dtype=torch.float64, device=batch.x.device)
            return ridge_filter(batch.x, batch.y, lam)[0][..., 0].to(batch.x.dtype)

        return predict

    return {f"ridge[{s:g}]": make(s) for s in sigmas}


def oracle_sigma_ridge(batch: "RawBatch") -> Tensor:
    """LATENT σ: ridge at λ = dσ² with the sequence's true σ (Bai et al.'s "Bayes" line);
    least squares where σ = 0 (classification sequences)."""
    d = batch.x.shape[-1]
    sigma = _f64(batch.sigma)
    lam = (d * sigma**2).clamp(min=1e-300).unsqueeze(-1)  # [B, 1]
    ridge = ridge_filter(batch.x, batch.y, lam)[0][..., 0]
    noiseless = (sigma == 0).unsqueeze(-1)
    if bool(noiseless.any()):
        ridge = torch.where(noiseless, least_squares(batch.x, batch.y), ridge)
    return ridge.to(batch.x.dtype)


def _last_batch_memo(fn: Callable[["RawBatch"], Tensor]) -> Callable[["RawBatch"], Tensor]:
    """``fn`` remembering its result for the last batch (same x and y tensor objects), so the
    type router and the predictors it routes to share one fit when an evaluator calls them all."""
    last: list[Any] = [None, None, None]

    def call(batch: "RawBatch") -> Tensor:
        if last[0] is not batch.x or last[1] is not batch.y:
            last[:] = [batch.x, batch.y, fn(batch)]
        return last[2]

    return call


#: The grid of the best single-λ ridge: λ = d·s², s geometric in [0.03, 1.5].
SINGLE_RIDGE_SCALES = torch.logspace(math.log10(0.03), math.log10(1.5), 41, dtype=torch.float64)


def single_ridge_grid(d: int) -> Tensor:
    """``[G]`` penalties of the best single-λ ridge's grid for dimension ``d``."""
    return d * SINGLE_RIDGE_SCALES**2


def fit_single_ridge(x: Tensor, y: Tensor) -> list[float]:
    """Per prefix n = 0..N−1, the penalty of the grid with the lowest mean squared error over the sequences
    ``x [B, N, d]``, ``y [B, N]`` (training-distribution data): ``λ*(n)``, the best a rule that uses one
    λ for every sequence (that does not select) can do at n."""
    lam = single_ridge_grid(x.shape[-1]).to(x.device)
    pred = ridge_filter(x, y, lam)[0]  # [B, N, G]
    err = ((pred - y.double().unsqueeze(-1)) ** 2).mean(0)  # [N, G]
    return [float(v) for v in lam[err.argmin(-1)].cpu()]


def single_ridge(lams: list[float]) -> RawPredictor:
    """HONEST: ridge at the fitted ``λ*(n)`` at every prefix n (one λ per n, the same for every sequence)."""

    def predict(batch: "RawBatch") -> Tensor:
        table = torch.tensor(lams, dtype=torch.float64, device=batch.x.device)
        unique, index = torch.unique(table, return_inverse=True)  # [U], [N]
        pred = ridge_filter(batch.x, batch.y, unique)[0]  # [B, N, U]
        return pred.gather(-1, index.view(1, -1, 1).expand(pred.shape[0], -1, 1)).squeeze(-1).to(batch.x.dtype)

    return predict


@register_suite(RawTask)
class RawSuite(BaselineSuite):
    """Baselines of the raw-data regression tasks, every prefix at once; the reference is the exact
    Bayes posterior mixture (Bayes-optimal among predictors of the pairs for the mixed-noise prior)."""

    SEES = RAW_BASELINE_SEES
    non_selecting = "best_single_ridge"  # the line "selection shown" is measured against

    def reference_name(self) -> str:
        return "bayes_posterior_mixture"

    def fit(self, seed: int, sequences: int, metric: str | None = None) -> BaselineFit:
        """The best single-λ ridge's ``λ*(n)``, on training-distribution sequences from the stacking stream."""
        fit = BaselineFit(metric or self.task.loss, self.reference_name())
        if sequences > 0:
            batch = self.task.sample(sequences, make_generator(stream_seed(seed, STACKING_STREAM), self.task.device))
            reg = batch.is_regression
            fit.params["single_ridge_lams"] = fit_single_ridge(batch.x[reg], batch.y[reg])
        return fit

    def predictors(self, fit: Any = None) -> dict[str, RawPredictor]:
        sigmas, probs = list(self.task.noise_levels), list(self.task.noise_probs)
        self.mixture = _last_batch_memo(lambda batch: bayes_mixture(batch.x, batch.y, sigmas, probs)[0])
        out: dict[str, RawPredictor] = {"least_squares": _on(least_squares)}
        out.update(_per_level_ridge(sigmas))
        out.update({
            "bayes_posterior_mixture": lambda batch: self.mixture(batch).to(batch.x.dtype),
            "oracle_sigma_ridge": oracle_sigma_ridge,
            "nearest_neighbours_3": _on(nearest_neighbours),
            "averaging": _on(averaging),
        })
        lams = (getattr(fit, "params", None) or {}).get("single_ridge_lams")
        if lams:
            out["best_single_ridge"] = single_ridge(lams)
        return out

    def prefix_risk(self, batch: "RawBatch", *, observed: bool) -> Tensor | None:
        """The Bayes mixture's risk given the earlier pairs (:func:`bayes_mixture_risk`); None for a family whose
        prior is not the mixed-noise one (task diversity's pool, a user's subclass with other noise): the
        mixture is no longer its Bayes predictor."""
        if type(self.task) not in (MixedNoiseRegressionTask, LinearOrLogisticTask):
            return None
        return bayes_mixture_risk(batch.x, batch.y, list(self.task.noise_levels), list(self.task.noise_probs),
                                  observed=observed)


def _on(fn: Callable[[Tensor, Tensor], Tensor]) -> RawPredictor:
    return lambda batch: fn(batch.x, batch.y).to(batch.x.dtype)


@register_suite(LinearOrLogisticTask)
class LinearOrLogisticSuite(RawSuite):
    """Adds logistic regression, the honest type detector and the latent type oracle. The reference stays
    the Bayes mixture (Bayes-optimal on the regression sequences only)."""

    logistic_C: float = LOGISTIC_C

    def predictors(self, fit: Any = None) -> dict[str, RawPredictor]:
        out = super().predictors(fit)
        mixture = self.mixture
        logistic = _last_batch_memo(lambda batch: logistic_regression(batch.x, batch.y, self.logistic_C))

        def type_oracle(batch: "RawBatch") -> Tensor:
            """LATENT type: the Bayes mixture on regression sequences, logistic regression on the rest."""
            reg = batch.is_regression.unsqueeze(-1)
            return torch.where(reg, mixture(batch), logistic(batch)).to(batch.x.dtype)

        def type_detector(batch: "RawBatch") -> Tensor:
            """Honest: logistic regression while every visible label is ±1, else the Bayes mixture."""
            looks = labels_look_binary(batch.y)
            return torch.where(looks, logistic(batch), mixture(batch)).to(batch.x.dtype)

        out.update({
            "logistic_regression": lambda batch: logistic(batch).to(batch.x.dtype),
            "type_detector": type_detector,
            "type_oracle": type_oracle,
        })
        return out

    def prefix_risk(self, batch: "RawBatch", *, observed: bool) -> Tensor | None:
        """The Bayes mixture's risk where a visible label is not ±1 (a regression prefix, read off the labels
        as the model reads them); before any label, the prior's: the Bayes prediction is 0 for both types, its
        risk ``E[target²]`` = p·(1 + E[σ²] if ``observed``) + (1 − p)·1; NaN on prefixes of signs (no closed
        form: the training code takes the classification type's per-position weight there)."""
        risk = super().prefix_risk(batch, observed=observed)
        if risk is None:
            return None
        p = self.task.data.p_regression
        noise = sum(q * s * s for q, s in zip(self.task.noise_probs, self.task.noise_levels)) if observed else 0.0
        risk[:, 0] = p * (1.0 + noise) + (1.0 - p)
        regression_seen = ~labels_look_binary(batch.y)
        regression_seen[:, 0] = True  # the prior's risk, the same for every sequence
        return torch.where(regression_seen, risk, torch.full_like(risk, math.nan))


def make_raw_baselines(task: RawTask) -> dict[str, RawPredictor]:
    """Every baseline of a raw task, by name (its suite's predictors)."""
    return suite_for(task).predictors(None)
