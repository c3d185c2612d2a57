"""Batched candidate fitting: ridge and L2 logistic regression, each with an
unpenalized intercept, for a whole batch of sequences and all candidate
regularisations at once.

Both follow scikit-learn's objective exactly (``Ridge(alpha=b)`` and
``LogisticRegression(C=b)``) so their predictions agree with it to solver
tolerance; they run on any torch device. Fits are computed in float64 whatever
the input dtype (the systems are tiny, the cost is negligible, and float32
normal equations lose digits when d >= N), and predictions are returned in the
input dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _as_penalties(values: Tensor | list[float], like: Tensor) -> Tensor:
    pen = torch.as_tensor(values, dtype=torch.float64, device=like.device).reshape(-1)
    if pen.numel() == 0:
        raise ValueError("need at least one candidate regularisation")
    if not bool((pen > 0).all()):
        raise ValueError("candidate regularisations must be > 0")
    return pen


def ridge_predictions(x_train: Tensor, y_train: Tensor, x_test: Tensor, alphas: Tensor | list[float]) -> Tensor:
    """Fit ridge regression with an unpenalized intercept per sequence and per alpha; predict x_test.

    Solves ``(XcᵀXc + a·I) w = Xcᵀyc`` on the centred data, intercept ``ȳ − x̄ᵀw``
    (scikit-learn ``Ridge(alpha=a)``).

    Args:
        x_train: ``[B, n, d]`` inputs.
        y_train: ``[B, n]`` targets.
        x_test: ``[B, m, d]`` inputs to predict.
        alphas: ``[K]`` positive penalties.

    Returns:
        ``[B, m, K]`` predictions, in the dtype of ``x_test``.
    """
    out_dtype = x_test.dtype
    pen = _as_penalties(alphas, x_train)
    X = x_train.to(torch.float64)
    y = y_train.to(torch.float64)
    x_mean = X.mean(dim=1, keepdim=True)  # [B, 1, d]
    y_mean = y.mean(dim=1, keepdim=True)  # [B, 1]
    Xc = X - x_mean
    yc = y - y_mean
    d = X.shape[-1]
    gram = Xc.mT @ Xc  # [B, d, d]
    rhs = Xc.mT @ yc.unsqueeze(-1)  # [B, d, 1]
    eye = torch.eye(d, dtype=torch.float64, device=X.device)
    system = gram.unsqueeze(1) + pen.view(1, -1, 1, 1) * eye  # [B, K, d, d]
    w = torch.linalg.solve(system, rhs.unsqueeze(1).expand(-1, pen.numel(), -1, -1))  # [B, K, d, 1]
    w = w.squeeze(-1)  # [B, K, d]
    intercept = y_mean - (x_mean @ w.mT).squeeze(1)  # [B, K]
    pred = x_test.to(torch.float64) @ w.mT + intercept.unsqueeze(1)  # [B, m, K]
    return pred.to(out_dtype)


def logistic_fit(
    x_train: Tensor,
    y_train: Tensor,
    Cs: Tensor | list[float],
    *,
    max_iter: int = 100,
    tol: float = 1e-2,
    gtol: float = 1e-9,
    chunk_bytes: int = 256 * 2**20,
) -> Tensor:
    """Fit L2 logistic regression with an unpenalized intercept per sequence and per C.

    Minimises ``C·Σ logloss(y, σ(xᵀw + b)) + ½‖w‖²`` (scikit-learn
    ``LogisticRegression(C=C)``) by Newton steps with a backtracking (Armijo)
    line search, for all sequences at once, warm-started along the C path
    (ascending C, each fit starting from the previous optimum).

    A problem stops once its gradient is below ``gtol``, or once it has taken a
    Newton step below ``tol`` in every coordinate: Newton converges
    quadratically (the error after a step of size s is about s²/2), so the
    default leaves parameter errors of order 1e-5; pass ``tol=1e-8`` for a
    tighter fit. The gradient is float64, so the fixed point is exact; the
    Hessian is formed in float32 (an approximate Hessian changes only the speed).

    A sequence whose labels are all one class has no finite optimum: the
    objective's infimum is at ``w = 0`` and an infinite intercept, so it gets
    ``w = 0`` and intercept ``±inf`` (probability exactly 1 or 0).
    scikit-learn refuses such data.

    Args:
        x_train: ``[B, n, d]`` inputs.
        y_train: ``[B, n]`` labels in {0, 1}.
        Cs: ``[K]`` positive inverse regularisation strengths.
        chunk_bytes: sequences are processed in chunks of about this much working memory.

    Returns:
        ``[B, K, d + 1]`` float64 parameters ``(w, intercept)``.
    """
    C = _as_penalties(Cs, x_train)
    B, n, d = x_train.shape
    p = d + 1
    chunk = max(1, chunk_bytes // max(1, 64 * n * p))  # ~8 float64 copies of the inputs
    parts = [
        _logistic_fit_chunk(x_train[i : i + chunk], y_train[i : i + chunk], C, max_iter=max_iter, tol=tol, gtol=gtol)
        for i in range(0, B, chunk)
    ]
    return torch.cat(parts, dim=0) if parts else x_train.new_zeros(0, C.numel(), p, dtype=torch.float64)


def _logistic_fit_chunk(x_train: Tensor, y_train: Tensor, C: Tensor, *, max_iter: int, tol: float, gtol: float) -> Tensor:
    X = x_train.to(torch.float64)
    B, n, d = X.shape
    K = C.numel()
    p = d + 1
    Xa = torch.cat([X, X.new_ones(B, n, 1)], dim=-1)  # [B, n, p]
    Xa32 = Xa.float()
    y = y_train.to(torch.float64)  # [B, n]
    frac = y.mean(-1)  # [B]
    single = (frac == 0) | (frac == 1)
    # Start from the intercept-only optimum: w = 0, intercept = log-odds of the labels.
    theta0 = X.new_zeros(B, p)
    theta0[:, -1] = torch.where(single, 0.0, torch.logit(frac.clamp(1e-12, 1 - 1e-12)))
    thetas = X.new_zeros(B, K, p)
    # Warm start along the path, from the most to the least regularised
    # candidate, each start extrapolated from the previous optima in log C.
    path: list[tuple[float, Tensor]] = []
    for k in torch.argsort(C).tolist():
        c = float(C[k])
        start = _extrapolate_path(path, c) if path else theta0
        theta0 = _newton_logistic(Xa, Xa32, y, c, start, ~single, max_iter=max_iter, tol=tol, gtol=gtol)
        path.append((c, theta0))
        thetas[:, k] = theta0
    if bool(single.any()):  # closed-form limit: w = 0, intercept = ±inf
        thetas[single] = 0.0
        limit = torch.full_like(frac[single], -torch.inf).masked_fill(frac[single] == 1, torch.inf)
        thetas[single, :, -1] = limit.unsqueeze(-1)
    return thetas


def _extrapolate_path(path: list[tuple[float, Tensor]], c: float) -> Tensor:
    """Polynomial extrapolation (degree ≤ 2, in log C) of the optima in ``path`` to ``c``."""
    pts = [(math.log(ci), ti) for ci, ti in path[-3:]]
    xs = [x for x, _ in pts]
    if len(set(xs)) < len(xs):  # repeated C: no extrapolation
        return path[-1][1]
    x = math.log(c)
    out = torch.zeros_like(pts[-1][1])
    for i, (xi, ti) in enumerate(pts):  # Lagrange form
        weight = 1.0
        for j, (xj, _) in enumerate(pts):
            if j != i:
                weight *= (x - xj) / (xi - xj)
        out = out + weight * ti
    return out


def _newton_logistic(
    Xa: Tensor, Xa32: Tensor, y: Tensor, C: float, theta: Tensor, active: Tensor, *, max_iter: int, tol: float, gtol: float
) -> Tensor:
    """Newton with Armijo backtracking for one C on every sequence; ``theta [B, p]`` is the start.

    While most problems are active the step is computed for all of them and
    masked (gathers cost more than the wasted arithmetic); afterwards only the
    active rows are gathered.
    """
    B, n, p = Xa.shape
    d = p - 1
    pen = torch.ones(p, dtype=torch.float64, device=Xa.device)
    pen[-1] = 0.0  # the intercept is not penalised
    diag_add = pen + 1e-10
    theta = theta.clone()
    z = (Xa @ theta.unsqueeze(-1)).squeeze(-1)  # [B, n] logits of the training points

    def objective(z: Tensor, theta: Tensor, yy: Tensor) -> Tensor:
        return C * (torch.nn.functional.softplus(z) - yy * z).sum(-1) + 0.5 * (theta[..., :d] ** 2).sum(-1)

    obj = objective(z, theta, y)
    active = active.clone()
    for _ in range(max_iter):
        prob = torch.sigmoid(z)  # [B, n]
        grad = C * ((prob - y).unsqueeze(1) @ Xa).squeeze(1) + theta * pen  # [B, p]
        active &= grad.abs().amax(-1) >= gtol
        n_active = int(active.sum())
        if n_active == 0:
            break
        if 2 * n_active >= B:
            idx: slice | Tensor = slice(None)
            mask = active
        else:
            idx = torch.nonzero(active).squeeze(-1)  # [A]
            mask = torch.ones(n_active, dtype=torch.bool, device=Xa.device)
        pa, ya, za, tha, ga, Xs, Xs32 = prob[idx], y[idx], z[idx], theta[idx], grad[idx], Xa[idx], Xa32[idx]
        weights = (C * pa * (1 - pa)).float().unsqueeze(-1)  # [A, n, 1]
        hess = ((Xs32 * weights).mT @ Xs32).double()  # [A, p, p]
        hess.diagonal(dim1=-2, dim2=-1).add_(diag_add)
        delta = torch.linalg.solve(hess, ga.unsqueeze(-1)).squeeze(-1)  # [A, p]
        delta = delta * mask.unsqueeze(-1)
        u = (Xs @ delta.unsqueeze(-1)).squeeze(-1)  # [A, n]: change of z per unit step
        decrement = (ga * delta).sum(-1)  # [A]
        old = obj[idx]
        slack = 1e-12 * (1 + old.abs())  # round-off allowance near the optimum
        t = torch.ones_like(old)
        new_obj = objective(za - u, tha - delta, ya)
        bad = mask & ~(new_obj <= old - 1e-4 * decrement + slack)
        for _ in range(40):  # backtrack only where the full step failed
            if not bool(bad.any()):
                break
            t = torch.where(bad, 0.5 * t, t)
            b = torch.nonzero(bad).squeeze(-1)
            tb = t[b].unsqueeze(-1)
            trial = objective(za[b] - tb * u[b], tha[b] - tb * delta[b], ya[b])
            new_obj[b] = trial
            bad[b] = ~(trial <= old[b] - 1e-4 * t[b] * decrement[b] + slack[b])
        theta[idx] = tha - t.unsqueeze(-1) * delta
        z[idx] = za - t.unsqueeze(-1) * u
        obj[idx] = torch.where(mask, new_obj, old)
        active[idx] &= delta.abs().amax(-1) >= tol
    return theta


def logistic_probabilities(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, Cs: Tensor | list[float], **fit_kwargs: float
) -> Tensor:
    """``P(y=1 | x_test)`` under L2 logistic regression fitted per sequence and per C.

    Returns:
        ``[B, m, K]`` probabilities in the dtype of ``x_test``.
    """
    theta = logistic_fit(x_train, y_train, Cs, **fit_kwargs)  # [B, K, p]
    Xt = x_test.to(torch.float64)
    logits = Xt @ theta[..., :-1].mT + theta[..., -1].unsqueeze(1)  # [B, m, K]
    return torch.sigmoid(logits).to(x_test.dtype)
