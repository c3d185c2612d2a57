"""Task diversity: the pool, the pool/fresh held-out groups, and dMMSE against a per-sequence numpy loop."""

import math

import numpy as np
import torch

from selectlens.baselines import suite_for
from selectlens.baselines.task_diversity import dmmse
from selectlens.config import load_config
from selectlens.tasks import make_generator, make_task


def _task(**over):
    return make_task(load_config("task_diversity_cpu", [f"data.{k}={v}" for k, v in over.items()]))


def test_training_weights_come_from_the_pool_and_eval_has_fresh_ones():
    task = _task(pool_size=8)
    batch = task.sample(500, make_generator(1))
    dist = torch.cdist(batch.w.double(), task.pool.double())  # [B, M]
    assert float(dist.min(1).values.max()) < 1e-6  # every w is a pool vector
    assert len(torch.unique(dist.argmin(1))) == 8  # all of them used
    ev = task.sample_for_eval(400, make_generator(2))
    groups = task.groups(ev)
    assert int(groups["pool"].sum()) == 200 and int(groups["fresh"].sum()) == 200
    fresh_dist = torch.cdist(ev.w[groups["fresh"]].double(), task.pool.double()).min(1).values
    assert float(fresh_dist.min()) > 1e-3
    again = _task(pool_size=8)
    assert torch.equal(again.pool, task.pool)  # the pool depends on pool_seed alone


def _dmmse_numpy(x, y, pool, sigma):
    B, N, d = x.shape
    out = np.zeros((B, N))
    for b in range(B):
        for n in range(N):
            f_prefix = x[b, :n] @ pool.T / math.sqrt(d)  # [n, M]
            r = ((y[b, :n, None] - f_prefix) ** 2).sum(0)  # [M]
            logw = -r / (2 * sigma**2)
            w = np.exp(logw - logw.max())
            w /= w.sum()
            out[b, n] = w @ (pool @ x[b, n] / math.sqrt(d))
    return out


def test_dmmse_matches_a_numpy_loop_for_every_prefix():
    task = _task(pool_size=16, N=10)
    batch = task.sample_for_eval(40, make_generator(3))
    ours = dmmse(batch.x, batch.y, task.pool, 0.5).numpy()
    ref = _dmmse_numpy(batch.x.double().numpy(), batch.y.double().numpy(), task.pool.double().numpy(), 0.5)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)


def test_dmmse_is_best_on_pool_and_ridge_on_fresh_sequences():
    task = _task(pool_size=4, N=12)
    batch = task.sample_for_eval(4000, make_generator(4))
    suite = suite_for(task)
    preds = suite.predictors(suite.fit(0, 0))
    groups = task.groups(batch)
    err = {name: ((preds[name](batch) - batch.y) ** 2)[:, 6:].mean(1) for name in ("dmmse", "ridge[0.5]")}
    pool, fresh = groups["pool"], groups["fresh"]
    assert float(err["dmmse"][pool].mean()) < float(err["ridge[0.5]"][pool].mean())  # Bayes for the pool prior
    assert float(err["ridge[0.5]"][fresh].mean()) < float(err["dmmse"][fresh].mean())  # Bayes for N(0, I)
    assert suite.reference(suite.fit(0, 0)) == "dmmse" and suite.sees("dmmse") == "honest"


def test_task_diversity_keys_are_its_own():
    import pytest
    from selectlens.config import ConfigError

    with pytest.raises(ConfigError, match="data.pool_size belongs to data.task task_diversity"):
        load_config("mixed_noise_cpu", ["data.pool_size=8"])
