"""Algorithm agreement: distances recomputed with numpy from the predictions."""

import numpy as np
import torch

from selectlens.config import load_config
from selectlens.interpret.agreement import agreement_figure, agreement_result, algorithm_agreement
from selectlens.model.gpt2 import ModelSpec, SelectionTransformer
from selectlens.tasks import make_generator, make_task

Z = 1.959963984540054


def test_agreement_distances_recomputed_with_numpy():
    cfg = load_config("mixed_noise_cpu", ["data.N=7", "data.d_d=3", "model.n_embd=16", "model.n_layer=1"])
    task = make_task(cfg)
    batch = task.sample(300, make_generator(5))
    torch.manual_seed(0)
    model = SelectionTransformer(ModelSpec.from_config(cfg))
    out = algorithm_agreement(model, task, batch)
    m = model.predict_positions(batch.tokens, task.readout).double().numpy()
    from selectlens.baselines.raw import make_raw_baselines

    preds = {k: fn(batch).double().numpy() for k, fn in make_raw_baselines(task).items()}
    sigma = batch.sigma.numpy()
    assert set(out["groups"]) == {"all", "sigma=0.1", "sigma=0.5"}
    for g, mask in {"all": np.ones(300, bool), "sigma=0.1": np.isclose(sigma, 0.1), "sigma=0.5": np.isclose(sigma, 0.5)}.items():
        res = out["groups"][g]
        assert res["sequences"] == mask.sum()
        means = {}
        for name, p in preds.items():
            d2 = (m[mask] - p[mask]) ** 2
            mean, half = d2.mean(0), Z * d2.std(0, ddof=1) / np.sqrt(mask.sum())
            np.testing.assert_allclose(res["distance"][name]["mean"], mean, rtol=1e-9, atol=1e-15)
            np.testing.assert_allclose(res["distance"][name]["ci_high"], mean + half, rtol=1e-9, atol=1e-15)
            means[name] = mean
        np.testing.assert_allclose(res["distance"]["prior_mean_zero"]["mean"], (m[mask] ** 2).mean(0), rtol=1e-9)
        means["prior_mean_zero"] = (m[mask] ** 2).mean(0)
        names = list(means)
        assert res["closest"] == [names[int(np.argmin([means[k][n] for k in names]))] for n in range(7)]
        spread = (preds["bayes_posterior_mixture"][mask] - preds["averaging"][mask]) ** 2
        np.testing.assert_allclose(res["baseline_to_reference"]["averaging"]["mean"], spread.mean(0), rtol=1e-9)
    assert out["sees"]["oracle_sigma_ridge"] == "latent"
    fig = agreement_figure(out)
    assert len(fig.axes) == 2 and all(len(ax.lines) == len(preds) + 1 for ax in fig.axes)
    assert out["sees"]["prior_mean_zero"] == "null" and "prior_mean_zero" not in res["baseline_to_reference"]


def test_agreement_is_zero_for_a_baseline_against_itself():
    cfg = load_config("mixed_noise_cpu", ["data.N=6"])
    task = make_task(cfg)
    batch = task.sample(50, make_generator(1))
    groups, ref = task.groups(batch), "bayes_posterior_mixture"
    x = torch.randn(50, 6)
    out = agreement_result(x, {"same": x.clone(), "other": x + 2.0}, groups, {}, ref)
    assert out["groups"]["all"]["distance"]["same"]["mean"] == [0.0] * 6
    np.testing.assert_allclose(out["groups"]["all"]["distance"]["other"]["mean"], [4.0] * 6, rtol=1e-6)
    assert out["groups"]["all"]["closest"] == ["same"] * 6
    zero = agreement_result(torch.zeros(50, 6), {"other": x}, groups, {}, ref)
    assert zero["groups"]["all"]["closest"] == ["prior_mean_zero"] * 6
