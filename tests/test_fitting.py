import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from selectlens.tasks import logistic_fit, logistic_probabilities, ridge_predictions


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _sk_ridge(X, y, Xt, alphas):
    out = np.zeros((X.shape[0], Xt.shape[1], len(alphas)))
    for b in range(X.shape[0]):
        for k, a in enumerate(alphas):
            out[b, :, k] = Ridge(alpha=a).fit(X[b], y[b]).predict(Xt[b])
    return out


def _sk_logistic(X, y, Xt, Cs):
    out = np.zeros((X.shape[0], Xt.shape[1], len(Cs)))
    for b in range(X.shape[0]):
        for k, c in enumerate(Cs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = LogisticRegression(C=c, tol=1e-8, max_iter=10000).fit(X[b], y[b])
            out[b, :, k] = m.predict_proba(Xt[b])[:, 1]
    return out


@pytest.mark.parametrize(
    "B, n, d, alphas",
    [
        (16, 21, 5, [0.1, 0.8]),  # the original config
        (8, 6, 12, [0.1, 0.8, 3.0]),  # underdetermined: d >= N
        (8, 10, 10, [0.01]),  # K = 1, d == N, weak penalty
        (1, 21, 5, [0.1, 0.8]),  # a batch of one sequence
        (4, 2, 3, [1.0, 100.0]),  # two points
    ],
)
def test_ridge_matches_sklearn(B, n, d, alphas):
    g = _gen(B * 100 + n)
    X = torch.randn(B, n, d, generator=g)
    Xt = torch.randn(B, 7, d, generator=g)
    y = (X @ torch.randn(B, d, 1, generator=g)).squeeze(-1) + 0.3 * torch.randn(B, n, generator=g)
    ours = ridge_predictions(X, y, Xt, alphas)
    assert ours.shape == (B, 7, len(alphas)) and ours.dtype == torch.float32
    ref = _sk_ridge(X.double().numpy(), y.double().numpy(), Xt.double().numpy(), alphas)
    np.testing.assert_allclose(ours.double().numpy(), ref, atol=1e-4, rtol=0)


def test_ridge_float64_is_exact_to_1e10():
    g = _gen(3)
    X = torch.randn(5, 9, 4, generator=g, dtype=torch.float64)
    y = torch.randn(5, 9, generator=g, dtype=torch.float64)
    ours = ridge_predictions(X, y, X, [0.5, 2.0])
    assert ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), _sk_ridge(X.numpy(), y.numpy(), X.numpy(), [0.5, 2.0]), atol=1e-10)


def test_ridge_intercept_is_unpenalized():
    # y = 5 everywhere: any penalty leaves w = 0 and the intercept at 5.
    X = torch.randn(2, 8, 3, generator=_gen(0))
    y = torch.full((2, 8), 5.0)
    assert torch.allclose(ridge_predictions(X, y, X, [1e3]), torch.full((2, 8, 1), 5.0), atol=1e-5)


def _labels(X, scale, g, intercept=0.0):
    """Bernoulli labels from a random w, with a true intercept drawn from N(intercept, 1) per sequence
    (a zero-mean intercept would leave an intercept bug unseen)."""
    w = torch.randn(X.shape[0], X.shape[-1], 1, generator=g, dtype=X.dtype)
    b = intercept + torch.randn(X.shape[0], 1, generator=g, dtype=X.dtype)
    return torch.bernoulli(torch.sigmoid(scale * (X @ w).squeeze(-1) + b), generator=g)


@pytest.mark.parametrize(
    "B, n, d, Cs, scale",
    [
        (12, 64, 16, [0.125, 0.25, 0.5, 1, 2, 4, 8], 2.0),  # the original classification config
        (8, 20, 5, [1.0], 1.0),  # K = 1
        (1, 30, 4, [0.5, 5.0], 1.0),  # a batch of one sequence
        (6, 10, 16, [0.1, 1.0, 10.0], 1.0),  # underdetermined: d >= N
        (6, 40, 3, [10.0, 1000.0], 50.0),  # separable data, large C
        (10, 48, 4, [0.25, 4.0], 1.5),  # with a strongly non-zero true intercept (below)
    ],
)
def test_logistic_matches_sklearn(B, n, d, Cs, scale):
    g = _gen(B * 1000 + n)
    X = torch.randn(B, n, d, generator=g)
    y = _labels(X, scale, g, intercept=1.5 if B == 10 else 0.0)
    y[:, 0], y[:, 1] = 0.0, 1.0  # scikit-learn needs both classes
    Xt = torch.randn(B, 9, d, generator=g)
    ours = logistic_probabilities(X, y, Xt, Cs)
    assert ours.shape == (B, 9, len(Cs)) and ours.dtype == torch.float32
    ref = _sk_logistic(X.double().numpy(), y.numpy(), Xt.double().numpy(), Cs)
    np.testing.assert_allclose(ours.double().numpy(), ref, atol=1e-3, rtol=0)


def test_logistic_default_tolerance_close_to_tight_solution():
    g = _gen(11)
    X = torch.randn(200, 64, 16, generator=g, dtype=torch.float64)
    y = _labels(X, 4.0, g, intercept=-1.0)
    Cs = [0.125, 0.5, 2, 8]
    loose = logistic_probabilities(X, y, X, Cs)
    tight = logistic_probabilities(X, y, X, Cs, tol=1e-12, gtol=1e-12)
    assert (loose - tight).abs().max() < 2e-4
    # At the tight solution the gradient of C·Σlogloss + ½‖w‖² vanishes.
    theta = logistic_fit(X, y, Cs, tol=1e-12, gtol=1e-12)
    Xa = torch.cat([X, torch.ones(200, 64, 1, dtype=torch.float64)], -1)
    p = torch.sigmoid(theta @ Xa.mT)  # [B, K, n]
    C = torch.tensor(Cs, dtype=torch.float64).view(1, -1, 1)
    grad = C * ((p - y.unsqueeze(1)) @ Xa) + torch.cat([theta[..., :-1], torch.zeros_like(theta[..., -1:])], -1)
    assert grad.abs().max() < 1e-6


def test_logistic_single_class_sequence_gives_limit_probability():
    X = torch.randn(3, 10, 2, generator=_gen(1))
    y = torch.stack([torch.ones(10), torch.zeros(10), (torch.arange(10) % 2).float()])
    p = logistic_probabilities(X, y, X, [1.0, 10.0])
    assert torch.all(p[0] == 1.0) and torch.all(p[1] == 0.0)
    assert torch.isfinite(p).all() and (p[2] > 0).all() and (p[2] < 1).all()


def test_bad_penalties_refused():
    X = torch.randn(1, 4, 2)
    with pytest.raises(ValueError):
        ridge_predictions(X, torch.randn(1, 4), X, [])
    with pytest.raises(ValueError):
        logistic_probabilities(X, torch.ones(1, 4), X, [0.0])
