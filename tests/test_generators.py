import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, Ridge

from selectlens.config import load_config
from selectlens.tasks import ClassificationTask, RegressionTask, make_generator, make_task


def _cfg(name="model_selection", *overrides):
    return load_config(name, list(overrides))


def test_regression_shapes_masking_and_target():
    cfg = _cfg()
    batch = make_task(cfg).sample(64, make_generator(0))
    B, N, d, K = 64, 21, 5, 2
    assert batch.tokens.shape == (B, N, K + 1) and batch.tokens.dtype == torch.float32
    assert batch.x_train.shape == (B, N, d) and batch.w.shape == (B, d) and batch.y_test.shape == (B, N)
    assert torch.all(batch.tokens[:, -1, -1] == 0)
    assert torch.equal(batch.target, batch.y_test[:, -1])
    assert torch.equal(batch.tokens[:, :-1, -1], batch.y_test[:, :-1])


def test_alpha_balanced_and_shuffled():
    cfg = _cfg("classification")
    alpha = make_task(cfg).sample(700, make_generator(1)).alpha
    values, counts = torch.unique(alpha, return_counts=True)
    assert torch.allclose(values, torch.tensor(cfg.data.data_alphas))
    assert torch.all(counts == 100)
    assert not torch.equal(alpha, torch.sort(alpha).values)  # shuffled
    odd = make_task(_cfg()).sample(5, make_generator(0)).alpha
    assert sorted(torch.unique(odd, return_counts=True)[1].tolist()) == [2, 3]


def test_deterministic_per_seed_and_independent_of_global_rng():
    task = make_task(_cfg())
    torch.manual_seed(123)
    a = task.sample(50, make_generator(7))
    torch.manual_seed(999)
    torch.randn(10)
    b = task.sample(50, make_generator(7))
    c = task.sample(50, make_generator(8))
    for k, v in a.as_dict().items():
        assert torch.equal(v, b.as_dict()[k]), k
    assert not torch.equal(a.tokens, c.tokens)


def test_tokens_agree_with_sklearn_refits():
    batch = make_task(_cfg()).sample(20, make_generator(3))
    for b in range(20):
        for k, a in enumerate([0.1, 0.8]):
            m = Ridge(alpha=a).fit(batch.x_train[b].double().numpy(), batch.y_train[b].double().numpy())
            np.testing.assert_allclose(batch.tokens[b, :, k].numpy(), m.predict(batch.x_test[b].double().numpy()), atol=1e-4)


def test_classification_tokens_agree_with_sklearn_refits():
    cfg = _cfg("classification", "data.N=32", "data.d_d=4")
    batch = make_task(cfg).sample(14, make_generator(4))
    assert set(torch.unique(batch.y_train).tolist()) <= {0.0, 1.0}
    for b in range(14):
        if batch.y_train[b].min() == batch.y_train[b].max():
            continue
        for k, c in enumerate(cfg.data.candidates):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = LogisticRegression(C=c, tol=1e-8, max_iter=10000).fit(batch.x_train[b].double().numpy(), batch.y_train[b].numpy())
            np.testing.assert_allclose(
                batch.tokens[b, :, k].numpy(), m.predict_proba(batch.x_test[b].double().numpy())[:, 1], atol=1e-3
            )


def test_regression_noise_level_matches_alpha():
    cfg = _cfg("model_selection", "data.N=50")
    batch = make_task(cfg).sample(4000, make_generator(5))
    resid = batch.y_train - (batch.x_train @ batch.w.unsqueeze(-1)).squeeze(-1)
    for a in (0.1, 0.8):
        sel = batch.alpha == a
        std = resid[sel].std().item()
        assert std == pytest.approx(0.8 * a, rel=0.02)


def test_classification_label_rate_matches_logistic_model():
    cfg = _cfg("classification", "data.N=40")
    batch = make_task(cfg).sample(1400, make_generator(6))
    p = torch.sigmoid(4 * batch.alpha[:, None] * (batch.x_train @ batch.w.unsqueeze(-1)).squeeze(-1))
    # Calibration: among points with p in a bin, the label frequency is the bin's mean p.
    for lo, hi in [(0.1, 0.3), (0.4, 0.6), (0.7, 0.9)]:
        m = (p > lo) & (p < hi)
        assert batch.y_train[m].mean().item() == pytest.approx(p[m].mean().item(), abs=0.02)


def test_float64_option_and_candidate_list():
    cfg = _cfg("model_selection", "dtype=float64", "data.candidate_alphas=[0.01, 1, 100]")
    task = make_task(cfg)
    assert isinstance(task, RegressionTask) and task.n_candidates == 3
    batch = task.sample(3, make_generator(0))
    assert batch.tokens.dtype == torch.float64 and batch.tokens.shape == (3, 21, 4)
    assert isinstance(make_task(_cfg("classification")), ClassificationTask)
