"""Context stacking, the Bayes-matched ridge and the full-information bound against independent
computations (scikit-learn, numpy) on small batches, in float64."""

import numpy as np
import pytest
import torch

from selectlens.baselines import StackingFit
from selectlens.baselines.bayes import bayes_full_information, bayes_matched_ridge, noise_floor_losses
from selectlens.baselines.stacking import (
    LevelEstimator, _best_threshold, fit_context_stacking, logistic_stacking_predictions, ridge_stacking_predictions,
)
from selectlens.config import load_config
from selectlens.tasks import make_generator, make_task


def _regression(n=12, seed=0, extra=()):
    cfg = load_config("default", ["data.N=9", "data.d_d=3", "dtype=float64", *extra])
    task = make_task(cfg)
    return task, task.sample(n, make_generator(seed))


@pytest.mark.parametrize("intercept", [False, True])
@pytest.mark.parametrize("prior", ["zero", "average"])
def test_ridge_stacking_matches_sklearn_ridge_per_sequence(intercept, prior):
    from sklearn.linear_model import Ridge

    _, b = _regression()
    lams = torch.tensor([1e-4, 0.03, 2.0], dtype=torch.float64)
    ours = ridge_stacking_predictions(b, lams, intercept=intercept, prior=prior)  # [G, B]
    F, y, fq = b.tokens[:, :-1, :-1].numpy(), b.tokens[:, :-1, -1].numpy(), b.tokens[:, -1, :-1].numpy()
    K = F.shape[-1]
    b0 = np.full(K, 1.0 / K) if prior == "average" else np.zeros(K)
    for g, lam in enumerate(lams.tolist()):
        for i in range(len(b)):
            r = Ridge(alpha=lam, fit_intercept=intercept, solver="cholesky").fit(F[i], y[i] - F[i] @ b0)
            ref = r.predict(fq[i : i + 1])[0] + fq[i] @ b0
            assert abs(float(ours[g, i]) - ref) < 1e-8


def test_logistic_stacking_matches_sklearn():
    from scipy.special import logit
    from sklearn.linear_model import LogisticRegression

    task = make_task(load_config("classification", ["data.N=30", "data.d_d=3", "data.data_alphas=[0.5,2]"]))
    b = task.sample(8, make_generator(2))
    lams = torch.tensor([0.1, 3.0], dtype=torch.float64)
    ours = logistic_stacking_predictions(b, lams)
    F = logit(np.clip(b.tokens[:, :-1, :-1].double().numpy(), 1e-6, 1 - 1e-6))
    y = b.tokens[:, :-1, -1].numpy()
    fq = logit(np.clip(b.tokens[:, -1:, :-1].double().numpy(), 1e-6, 1 - 1e-6))
    for g, lam in enumerate(lams.tolist()):
        for i in range(len(b)):
            if len(set(y[i])) < 2:
                continue
            clf = LogisticRegression(C=1 / lam, tol=1e-10, max_iter=10000).fit(F[i], y[i])
            assert abs(float(ours[g, i]) - clf.predict_proba(fq[i])[0, 1]) < 1e-3


def test_best_threshold_is_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    low, high = rng.normal(0, 1, 200), rng.normal(1.5, 1, 150)
    cut = _best_threshold(torch.tensor(low), torch.tensor(high))
    acc = lambda c: ((low <= c).sum() + (high > c).sum()) / 350  # noqa: E731
    allv = np.sort(np.concatenate([low, high]))
    assert acc(cut) == pytest.approx(max(acc(c) for c in allv))


def test_stacking_fit_picks_the_best_penalty_per_estimated_level():
    task, b = _regression(n=600, seed=3, extra=["data.N=15"])
    fit = fit_context_stacking(b, "mse", classification=False, candidates=task.candidates)
    assert fit.estimator.accuracy > 0.8 and len(fit.penalties) == 2
    groups = fit.estimator.groups(b)
    grid = 10.0 ** torch.linspace(-6, 3, 91, dtype=torch.float64)
    preds = ridge_stacking_predictions(b, grid, intercept=fit.intercept, prior=fit.prior)
    losses = (preds - b.target.double()) ** 2  # [G, B]
    chosen = ridge_stacking_predictions(b, torch.tensor(fit.penalties, dtype=torch.float64),
                                        intercept=fit.intercept, prior=fit.prior)
    for g in range(2):
        m = groups == g
        at_fit = float(((chosen[g, m] - b.target[m]) ** 2).mean())
        assert at_fit <= float(losses[:, m].mean(1).min()) + 1e-12
    # the fitted predictor uses each sequence's group penalty, and the fit round-trips through a dict
    again = StackingFit.from_dict(fit.as_dict())
    assert isinstance(again.estimator, LevelEstimator) and again == fit


def test_full_information_bound_matches_a_direct_gaussian_marginal_likelihood():
    task, b = _regression(n=6, seed=1)
    ours = bayes_full_information(task.data.data_alphas, task.data.noise_scale)(b).numpy()
    X = np.concatenate([b.x_train.numpy(), b.x_test[:, :-1].numpy()], 1)  # [B, 2N−1, d]
    Y = np.concatenate([b.y_train.numpy(), b.y_test[:, :-1].numpy()], 1)
    xq = b.x_test[:, -1].numpy()
    for i in range(len(b)):
        logps, means = [], []
        for a in task.data.data_alphas:
            s2 = (task.data.noise_scale * a) ** 2
            S = X[i] @ X[i].T + s2 * np.eye(len(Y[i]))  # Y ~ N(0, XXᵀ + σ²I) under w ~ N(0, I)
            _, logdet = np.linalg.slogdet(S)
            alpha = np.linalg.solve(S, Y[i])
            logps.append(-0.5 * (Y[i] @ alpha + logdet))
            means.append(xq[i] @ X[i].T @ alpha)  # posterior mean of x_qᵀw, kernel form
        w = np.exp(np.array(logps) - max(logps))
        ref = (w / w.sum()) @ np.array(means)
        assert abs(ours[i] - ref) < 1e-6


def test_bayes_matched_ridge_and_noise_floor():
    from sklearn.linear_model import Ridge

    task, b = _regression(n=5, seed=4)
    ours = bayes_matched_ridge(task.data.noise_scale)(b).numpy()
    for i in range(len(b)):
        lam = (task.data.noise_scale * float(b.alpha[i])) ** 2
        r = Ridge(alpha=lam, fit_intercept=False).fit(b.x_train[i].numpy(), b.y_train[i].numpy())
        assert abs(ours[i] - r.predict(b.x_test[i, -1:].numpy())[0]) < 1e-8
    assert torch.allclose(noise_floor_losses(b, 0.8), (0.8 * b.alpha.double()) ** 2)


def test_bound_beats_every_honest_baseline_on_enough_data():
    # Not a proof, a sanity check of the ordering the bound implies (docs/design.md#full-information-bound).
    from selectlens.baselines import fit_selection_baselines, make_baselines

    task = make_task(load_config("default"))
    fit = fit_selection_baselines(task, 0, 1000)
    b = task.sample(3000, make_generator(9))
    loss = {n: float(((f(b) - b.target) ** 2).mean()) for n, f in make_baselines(task, fit).items()}
    floor = float(noise_floor_losses(b, task.data.noise_scale).mean())
    honest = ["context_validation_select", "context_softmax_ensemble", "context_stacking", "candidate_average"]
    assert floor < loss["bayes_full_information"] < min(loss[n] for n in honest)
    assert loss["context_stacking"] < loss["context_validation_select"]
