"""sparse_or_dense: lasso and ridge candidates against scikit-learn, the weights' prior, the full-information
bound against a brute-force posterior in covariance form, and the family's own config keys."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from sklearn.linear_model import Lasso, Ridge

from selectlens.baselines import suite_for
from selectlens.baselines.sparse_or_dense import sparse_dense_posterior_mean
from selectlens.config import ConfigError, load_config
from selectlens.tasks import make_generator, make_task
from selectlens.tasks.sparse_or_dense import lasso_predictions


def _task(*over):
    return make_task(load_config("sparse_or_dense_cpu", list(over)))


def test_lasso_and_ridge_candidates_match_scikit_learn():
    task = _task("data.lasso_alphas=[0.02, 0.3]", "data.ridge_alphas=[0.1, 2.0]")
    batch = task.sample(12, make_generator(0))
    preds = batch.tokens[:, :, :-1].double()  # [B, N, K] (the last y masked, the predictions intact)
    for b in range(12):
        X, y, Xq = batch.x_train[b].double().numpy(), batch.y_train[b].double().numpy(), batch.x_test[b].double().numpy()
        for j, a in enumerate([0.02, 0.3]):
            ref = Lasso(alpha=a, tol=1e-12, max_iter=100000).fit(X, y).predict(Xq)
            np.testing.assert_allclose(preds[b, :, j].numpy(), ref, atol=1e-4)
        for j, a in enumerate([0.1, 2.0]):
            np.testing.assert_allclose(preds[b, :, 2 + j].numpy(), Ridge(alpha=a).fit(X, y).predict(Xq), atol=1e-4)


def test_lasso_handles_d_above_n_and_all_zero_solutions():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 6, 9, generator=g, dtype=torch.float64), torch.randn(5, 6, generator=g, dtype=torch.float64)
    ours = lasso_predictions(x, y, x, [0.05, 100.0])
    for b in range(5):
        for j, a in enumerate([0.05, 100.0]):
            ref = Lasso(alpha=a, tol=1e-12, max_iter=200000).fit(x[b].numpy(), y[b].numpy()).predict(x[b].numpy())
            np.testing.assert_allclose(ours[b, :, j].numpy(), ref, atol=1e-4)
    np.testing.assert_allclose(ours[:, :, 1].numpy(), y.mean(1, keepdim=True).expand(5, 6).numpy(), atol=1e-12)


def test_weights_are_k_sparse_with_probability_p_sparse():
    task = _task("data.p_sparse=0.3", "data.k=3")
    batch = task.sample(4000, make_generator(2))
    nonzero = (batch.w != 0).sum(1)
    sparse = batch.alpha == 1.0
    assert abs(float(sparse.double().mean()) - 0.3) < 0.03
    assert bool((nonzero[sparse] == 3).all()) and bool((nonzero[~sparse] == 8).all())
    counts = torch.zeros(8)
    for w in batch.w[sparse]:
        counts += (w != 0).float()
    assert float(counts.min()) > 0.8 * float(counts.mean())  # supports uniform over the coordinates
    groups = task.groups(batch)
    assert int(groups["sparse"].sum()) + int(groups["dense"].sum()) == 4000


def _brute_force_posterior(X, Y, xq, sigma, k, p):
    """Posterior mean of x_qᵀw by enumerating components, in covariance form: Y ~ N(0, X_c X_cᵀ + σ²I)."""
    d = X.shape[1]
    comps = [(list(range(d)), 1 - p)] + [(list(S), p / math.comb(d, k)) for S in itertools.combinations(range(d), k)]
    logs, means = [], []
    for cols, prior in comps:
        if prior == 0:
            continue
        Xc = X[:, cols]
        cov = Xc @ Xc.T + sigma**2 * np.eye(len(Y))
        logs.append(np.log(prior) + multivariate_normal(np.zeros(len(Y)), cov).logpdf(Y))
        means.append(xq[cols] @ Xc.T @ np.linalg.solve(cov, Y))  # E[w_c | Y] = X_cᵀ cov⁻¹ Y
    logs = np.array(logs)
    w = np.exp(logs - logs.max())
    return float(w @ np.array(means) / w.sum())


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_full_information_bound_matches_brute_force(p):
    g = torch.Generator().manual_seed(3)
    X, Y, xq = torch.randn(6, 11, 5, generator=g), torch.randn(6, 11, generator=g), torch.randn(6, 5, generator=g)
    ours = sparse_dense_posterior_mean(X, Y, xq, 0.7, 2, p)
    ref = [_brute_force_posterior(X[b].double().numpy(), Y[b].double().numpy(), xq[b].double().numpy(), 0.7, 2, p)
           for b in range(6)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-8, atol=1e-10)


def test_suite_sees_and_the_bound_beats_every_honest_baseline():
    task = _task("data.N=10")
    suite = suite_for(task)
    fit = suite.fit(0, 1000)
    batch = task.sample(2000, make_generator(4))
    losses = {n: float(((f(batch) - batch.target) ** 2).mean()) for n, f in suite.predictors(fit).items()}
    assert suite.sees("true_type_candidate") == "latent" and suite.sees("bayes_full_information") == "bound"
    assert suite.sees("candidate[lasso 0.1]") == "honest" and suite.bound == "bayes_full_information"
    honest = [n for n in losses if suite.sees(n) == "honest"]
    assert {"context_validation_select", "context_softmax_ensemble", "context_stacking"} <= set(honest)
    assert losses["bayes_full_information"] < min(losses[n] for n in honest)


def test_keys_of_other_families_are_refused():
    with pytest.raises(ConfigError, match="data.noise_levels belongs to"):
        load_config("sparse_or_dense_cpu", ["data.noise_levels=[0.1]"])
    with pytest.raises(ConfigError, match="data.k"):
        load_config("sparse_or_dense_cpu", ["data.k=9"])
