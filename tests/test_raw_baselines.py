"""Raw-data baselines, every prefix, against independent per-sequence numpy / scipy / scikit-learn."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from selectlens.baselines import suite_for
from selectlens.baselines.raw import (
    RAW_BASELINE_SEES, averaging, bayes_mixture, labels_look_binary, least_squares,
    logistic_regression, make_raw_baselines, nearest_neighbours, ridge_filter,
)
from selectlens.config import ConfigError, load_config
from selectlens.tasks import make_task

SIGMAS, PROBS = [0.1, 0.5], [0.3, 0.7]


def _suite(task_name, sigmas=SIGMAS, probs=PROBS):
    """The baseline suite of raw task ``task_name`` with noise levels ``sigmas`` drawn with ``probs``."""
    cfg = load_config("mixed_noise_cpu", [f"data.task={task_name}", f"data.noise_levels={sigmas}",
                                          f"data.noise_probs={probs}"])
    return suite_for(make_task(cfg))


def raw_baselines(task_name, sigmas=SIGMAS, probs=PROBS):
    """Every baseline of raw task ``task_name`` (its suite's predictors)."""
    return _suite(task_name, sigmas, probs).predictors(None)


def _sample(B, N, d, *, seed=0, classification=None, sigmas=SIGMAS, dtype=torch.float64):
    """A tiny local sampler of the raw tasks: x, y = xᵀw/√d + σz (or sign(xᵀw) where classification)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    w = torch.randn(B, d, generator=g, dtype=torch.float64)
    sigma = torch.tensor(sigmas, dtype=torch.float64)[torch.randint(len(sigmas), (B,), generator=g)]
    clean = (x @ w.unsqueeze(-1)).squeeze(-1)
    y = clean / math.sqrt(d) + sigma.unsqueeze(-1) * torch.randn(B, N, generator=g, dtype=torch.float64)
    is_reg = torch.ones(B, dtype=torch.bool)
    if classification is not None:
        is_reg = ~classification
        y = torch.where(classification.unsqueeze(-1), torch.sign(clean), y)
        sigma = torch.where(classification, 0.0, sigma)
    return SimpleNamespace(x=x.to(dtype), y=y.to(dtype), sigma=sigma.to(dtype), is_regression=is_reg, w=w)


def _prefixes(b):
    """(sequence, prefix n, X [n, d], Y [n], x_q [d]) for every sequence and n ≥ 1, in numpy."""
    x, y = b.x.double().numpy(), b.y.double().numpy()
    for s in range(x.shape[0]):
        for n in range(1, x.shape[1]):
            yield s, n, x[s, :n], y[s, :n], x[s, n]


def _bayes_reference(X, Y, xq, sigmas, probs):
    """Posterior mean by Gaussian conditioning with the n × n covariance, evidence by scipy's logpdf."""
    d = X.shape[1]
    logw, means = [], []
    for s, p in zip(sigmas, probs):
        cov = X @ X.T / d + s * s * np.eye(len(Y))
        logw.append(math.log(p) + multivariate_normal(np.zeros(len(Y)), cov).logpdf(Y))
        means.append((X @ xq / d) @ np.linalg.solve(cov, Y))  # Cov(y_q, Y) Σ⁻¹ Y
    logw = np.array(logw)
    post = np.exp(logw - logw.max())
    post /= post.sum()
    return float(post @ np.array(means)), post


def test_bayes_mixture_matches_gaussian_conditioning_within_1e6():
    b = _sample(6, 12, 3, seed=1)
    pred, post = bayes_mixture(b.x, b.y, SIGMAS, PROBS)
    assert pred.shape == (6, 12) and post.shape == (6, 12, 2)
    assert torch.all(pred[:, 0] == 0) and torch.allclose(post[:, 0], torch.tensor(PROBS, dtype=torch.float64))
    for s, n, X, Y, xq in _prefixes(b):
        want, want_post = _bayes_reference(X, Y, xq, SIGMAS, PROBS)
        assert abs(float(pred[s, n]) - want) < 1e-6 * max(1.0, abs(want))
        np.testing.assert_allclose(post[s, n].numpy(), want_post, atol=1e-6)


def test_bayes_mixture_posterior_concentrates_on_the_true_level():
    b = _sample(200, 40, 3, seed=2)
    post = bayes_mixture(b.x, b.y, SIGMAS, [0.5, 0.5])[1][:, -1]  # [B, K] after 39 pairs
    true_k = (b.sigma == 0.5).long()
    assert (post.argmax(-1) == true_k).float().mean() > 0.95


def test_ridge_filter_matches_direct_solves_on_long_sequences():
    b = _sample(3, 150, 4, seed=3)
    lam = torch.tensor([4 * 0.01, 4 * 0.25, 7.0], dtype=torch.float64)
    pred, rss, logdet = ridge_filter(b.x, b.y, lam)
    x, y = b.x.numpy(), b.y.numpy()
    for s in range(3):
        for n in [0, 1, 4, 60, 149]:
            X, Y = x[s, :n], y[s, :n]
            for k, lk in enumerate(lam.tolist()):
                A = X.T @ X + lk * np.eye(4)
                beta = np.linalg.solve(A, X.T @ Y)
                assert abs(pred[s, n, k] - x[s, n] @ beta) < 1e-9 * (1 + abs(x[s, n] @ beta))
                assert abs(rss[s, n, k] - (Y @ Y - Y @ X @ beta)) < 1e-9 * (1 + Y @ Y)
                assert abs(logdet[s, n, k] - np.linalg.slogdet(np.eye(4) + X.T @ X / lk)[1]) < 1e-9 * (1 + n)


def test_ridge_per_level_matches_sklearn():
    from sklearn.linear_model import Ridge

    b = _sample(4, 9, 3, seed=4)
    preds = raw_baselines("mixed_noise_regression", SIGMAS, PROBS)
    for s, n, X, Y, xq in _prefixes(b):
        for sig in SIGMAS:
            want = Ridge(alpha=3 * sig * sig, fit_intercept=False).fit(X, Y).predict(xq[None])[0]
            assert abs(float(preds[f"ridge[{sig:g}]"](b)[s, n]) - want) < 1e-8


def test_least_squares_is_minimum_norm_pinv():
    b = _sample(5, 10, 4, seed=5)  # prefixes n < d, = d and > d
    pred = least_squares(b.x, b.y)
    assert torch.all(pred[:, 0] == 0)
    for s, n, X, Y, xq in _prefixes(b):
        want = xq @ np.linalg.pinv(X) @ Y
        assert abs(float(pred[s, n]) - want) < 1e-7 * (1 + abs(want)), (s, n)


def test_nearest_neighbours_brute_force():
    b = _sample(4, 8, 2, seed=6)
    pred = nearest_neighbours(b.x, b.y, k=3)
    assert torch.all(pred[:, 0] == 0)
    for s, n, X, Y, xq in _prefixes(b):
        order = sorted(range(n), key=lambda i: float(np.sum((X[i] - xq) ** 2)))
        assert abs(float(pred[s, n]) - np.mean(Y[order[:3]])) < 1e-12


def test_averaging_by_loop():
    b = _sample(3, 6, 2, seed=7)
    pred = averaging(b.x, b.y)
    assert torch.all(pred[:, 0] == 0)
    for s, n, X, Y, xq in _prefixes(b):
        assert abs(float(pred[s, n]) - xq @ (X * Y[:, None]).mean(0)) < 1e-12


def test_logistic_regression_matches_sklearn():
    from sklearn.linear_model import LogisticRegression

    b = _sample(4, 10, 2, seed=8, classification=torch.ones(4, dtype=torch.bool))
    pred = logistic_regression(b.x, b.y, C=1.0)
    checked = 0
    for s, n, X, Y, xq in _prefixes(b):
        labels = (Y > 0).astype(int)
        if labels.min() == labels.max():  # one class: no finite fit, predicts that class
            assert float(pred[s, n]) == 2 * labels[0] - 1
            continue
        p = LogisticRegression(C=1.0, tol=1e-10, max_iter=1000).fit(X, labels).predict_proba(xq[None])[0, 1]
        assert abs(float(pred[s, n]) - (2 * p - 1)) < 2e-3
        checked += 1
    assert checked > 10


def test_type_detector_and_oracle_route_by_type():
    cls = torch.tensor([True, False, True, False])
    b = _sample(4, 8, 2, seed=9, classification=cls)
    preds = raw_baselines("linear_or_logistic", SIGMAS, PROBS)
    mix = bayes_mixture(b.x, b.y, SIGMAS, PROBS)[0]
    logit = logistic_regression(b.x, b.y)
    oracle = preds["type_oracle"](b)
    assert torch.equal(oracle[cls], logit[cls]) and torch.equal(oracle[~cls], mix[~cls])
    looks = labels_look_binary(b.y)
    want_looks = torch.tensor([[n >= 1 and bool((b.y[s, :n].abs() == 1).all()) for n in range(8)] for s in range(4)])
    assert torch.equal(looks, want_looks)
    assert looks[cls, 1:].all() and not looks[~cls, 1:].any()  # continuous labels are never exactly ±1
    detector = preds["type_detector"](b)
    assert torch.equal(detector[looks], logit[looks]) and torch.equal(detector[~looks], mix[~looks])


def test_oracle_sigma_ridge_uses_the_true_level_and_ls_when_noiseless():
    cls = torch.tensor([False, True, False])
    b = _sample(3, 8, 3, seed=10, classification=cls)
    pred = raw_baselines("linear_or_logistic", SIGMAS, PROBS)["oracle_sigma_ridge"](b)
    assert torch.allclose(pred[1], least_squares(b.x, b.y)[1])
    for s in (0, 2):
        lam = torch.tensor([3 * float(b.sigma[s]) ** 2], dtype=torch.float64)
        assert torch.allclose(pred[s], ridge_filter(b.x[s:s + 1], b.y[s:s + 1], lam)[0][0, :, 0])


def test_every_baseline_shape_dtype_label_and_zero_at_n0():
    b = _sample(5, 7, 3, seed=11, classification=torch.tensor([True, False] * 2 + [False]), dtype=torch.float32)
    for task in ("mixed_noise_regression", "linear_or_logistic"):
        suite = _suite(task)
        for name, fn in suite.predictors(None).items():
            out = fn(b)
            assert out.shape == (5, 7) and out.dtype == torch.float32, name
            assert torch.all(out[:, 0] == 0) and torch.isfinite(out).all(), name
            assert suite.sees(name) in {"honest", "latent"}
        assert suite.sees("oracle_sigma_ridge") == "latent" and suite.sees("ridge[0.1]") == "honest"
        with pytest.raises(KeyError):
            suite.sees("no_such_baseline")
    assert {k for k, v in RAW_BASELINE_SEES.items() if v == "latent"} == {"oracle_sigma_ridge", "type_oracle"}
    with pytest.raises(ConfigError):
        raw_baselines("regression", SIGMAS, PROBS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_bayes_mixture_on_gpu_equals_cpu():
    b = _sample(64, 20, 5, seed=12)
    cpu = bayes_mixture(b.x, b.y, SIGMAS, PROBS)[0]
    gpu = bayes_mixture(b.x.cuda(), b.y.cuda(), SIGMAS, PROBS)[0].cpu()
    assert torch.allclose(cpu, gpu, atol=1e-9)


def test_make_raw_baselines_on_the_real_tasks():
    from selectlens.config import load_config
    from selectlens.tasks import make_generator, make_task

    for preset in ("mixed_noise_cpu", "linear_or_logistic_cpu"):
        cfg = load_config(preset, ["data.N=6"])
        task = make_task(cfg)
        batch = task.sample(32, make_generator(0))
        preds = make_raw_baselines(task)
        assert {f"ridge[{s:g}]" for s in cfg.data.noise_levels} <= set(preds)
        assert ("type_oracle" in preds) == (cfg.data.task == "linear_or_logistic")
        want = bayes_mixture(batch.x, batch.y, cfg.data.noise_levels, cfg.data.noise_weights)[0].float()
        assert torch.equal(preds["bayes_posterior_mixture"](batch), want)
        for fn in preds.values():
            assert fn(batch).shape == batch.target.shape


def test_ridge_filter_in_chunks_equals_one_pass(monkeypatch):
    import selectlens.baselines.raw as raw

    b = _sample(37, 6, 3, seed=13)
    lam = torch.rand(37, 2, dtype=torch.float64) + 0.1
    whole = ridge_filter(b.x, b.y, lam)
    calls = []
    inner = raw._ridge_filter_chunk
    monkeypatch.setattr(raw, "_ridge_filter_chunk", lambda *a: calls.append(1) or inner(*a))
    monkeypatch.setattr(raw, "_CHUNK_ELEMENTS", 10 * 2 * 9)  # chunks of 10 sequences (K = 2, d = 3)
    parts = raw.ridge_filter(b.x, b.y, lam)
    assert len(calls) == 4
    for a, c in zip(whole, parts):
        assert torch.allclose(a, c, rtol=0, atol=1e-13)


def test_least_squares_in_chunks_equals_one_pass(monkeypatch):
    import selectlens.baselines.raw as raw

    b = _sample(23, 7, 3, seed=14)
    whole = least_squares(b.x, b.y)
    monkeypatch.setattr(raw, "_CHUNK_ELEMENTS", 5 * 7 * 9)  # chunks of 5 sequences
    assert torch.equal(raw.least_squares(b.x, b.y), whole)
