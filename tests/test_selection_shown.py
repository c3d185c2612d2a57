"""The best single-λ ridge (one λ per n for every sequence, fitted on training data) against a brute-force
numpy search, and the "selection shown" verdict: only where the model's excess CI lies below its excess."""

import numpy as np
import torch

from selectlens.baselines.raw import fit_single_ridge, single_ridge, single_ridge_grid
from selectlens.config import load_config
from selectlens.evaluate.runner import mark_selection_shown, selection_statements
from selectlens.tasks import make_generator, make_task


def _ridge_numpy(X, Y, xq, lam):
    d = X.shape[1]
    return float(xq @ np.linalg.solve(X.T @ X + lam * np.eye(d), X.T @ Y)) if len(Y) else 0.0


def test_single_ridge_is_the_grid_minimiser_per_n_and_predicts_like_numpy():
    task = make_task(load_config("mixed_noise_cpu", ["data.N=8", "data.d_d=3"]))
    batch = task.sample(300, make_generator(0))
    lams = fit_single_ridge(batch.x, batch.y)
    grid = single_ridge_grid(3).numpy()
    X, Y = batch.x.double().numpy(), batch.y.double().numpy()
    for n in (2, 5, 7):
        errs = [np.mean([(_ridge_numpy(X[b, :n], Y[b, :n], X[b, n], lam) - Y[b, n]) ** 2 for b in range(300)]) for lam in grid]
        assert np.isclose(lams[n], grid[int(np.argmin(errs))])
    pred = single_ridge(lams)(batch).double().numpy()
    for b in range(0, 300, 37):
        for n in range(8):
            assert np.isclose(pred[b, n], _ridge_numpy(X[b, :n], Y[b, :n], X[b, n], lams[n]), rtol=1e-4, atol=1e-5)


def test_selection_shown_only_where_the_model_ci_is_below_the_non_selecting_excess():
    g = torch.Generator().manual_seed(0)
    B, P = 4000, 4
    ref = torch.rand(B, P, generator=g, dtype=torch.float64)
    single = ref + torch.tensor([0.0, 0.5, 0.5, 0.01])  # excess 0, 0.5, 0.5, 0.01
    model = ref + torch.tensor([-0.1, 0.1, 0.6, 0.2]) + 0.01 * torch.randn(B, P, generator=g, dtype=torch.float64)
    # at position 0 the model's CI is below the line, but the line is no excess at all: nothing to show
    pointwise = {"model": model, "bayes": ref, "single": single}
    groups = {"all": torch.ones(B, dtype=torch.bool), "sigma=0.1": torch.arange(B) % 2 == 0}
    curves = {k: {"model_minus_reference": {"ci_high": ((model - ref)[m].mean(0) + 0.01).tolist()}} for k, m in groups.items()}
    mark_selection_shown(curves, pointwise, groups, "bayes", "single")
    assert curves["sigma=0.1"]["selection_shown"] == [False, True, False, False]
    text = selection_statements({"positions": [0, 1, 2, 3], "groups": curves, "reference": "bayes"})
    assert len(text) == 1 and text[0].startswith("selection shown at sigma=0.1 for n ∈ {1}")
