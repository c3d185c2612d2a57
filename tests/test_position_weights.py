"""training.position_weights: inverse_reference weighs each read-out position's loss by 1 / the reference
predictor's risk there (mean 1); eval stays unweighted."""

import json

import numpy as np
import pytest
import torch

from selectlens.config import ConfigError, load_config
from selectlens.tasks import make_generator, make_task
from selectlens.train import train
from selectlens.train import loop
from selectlens.train.loop import batch_loss, build_model, position_weights

TINY = ["data.train_samp_per_class=2000", "training.batch_size=200", "model.n_embd=32", "model.n_layer=1",
        "model.n_head=2", "eval.temperature_sequences=200", "training.epochs=1", "training.save_every_epochs=1"]
WEIGHTED = "training.position_weights=inverse_reference"


def _posterior_risk(d: int, n_max: int, sigma: float, draws: int = 20000) -> np.ndarray:
    """Closed form per prefix n (Monte Carlo over X only): with w ~ N(0, I) and y = xᵀw/√d + σz, the posterior
    of w after n pairs has covariance S_n = (I + XᵀX/(dσ²))⁻¹, so the posterior mean's squared error against
    x*ᵀw/√d is E tr(S_n)/d (x* ~ N(0, I) independent of X)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((draws, n_max, d))
    out = []
    for n in range(n_max):
        xtx = np.einsum("bni,bnj->bij", x[:, :n], x[:, :n])
        cov = np.linalg.inv(np.eye(d) + xtx / (d * sigma**2))
        out.append(np.trace(cov, axis1=1, axis2=2).mean() / d)
    return np.array(out)


@pytest.mark.parametrize("target", ["conditional_mean", "observed"])
def test_inverse_reference_weights_follow_the_posterior_risk(target):
    """One σ: the Bayes mixture is the exact posterior mean, whose risk at every n has a closed form; the
    observed target adds σ² to every position."""
    sigma, d, n = 0.3, 4, 8
    cfg = load_config("mixed_noise_cpu", [f"data.d_d={d}", f"data.N={n}", f"data.noise_levels=[{sigma}]",
                                          f"training.target={target}", WEIGHTED])
    task = make_task(cfg)
    weights = position_weights(cfg, task).double().numpy()
    risk = _posterior_risk(d, n, sigma) + (sigma**2 if target == "observed" else 0.0)
    expected = (1 / risk) / (1 / risk).mean()
    np.testing.assert_allclose(weights, expected, rtol=0.05)
    assert weights.mean() == pytest.approx(1.0, rel=1e-6)


def test_uniform_means_no_weights():
    cfg = load_config("mixed_noise_cpu")
    task = make_task(cfg)
    assert cfg.training.position_weights == "uniform" and position_weights(cfg, task) is None


def test_the_weighted_loss_is_the_weighted_mean_of_squared_errors():
    cfg = load_config("mixed_noise_cpu", TINY)
    torch.manual_seed(0)
    model, task = build_model(cfg), make_task(cfg)
    batch = task.sample(50, make_generator(1))
    weights = torch.linspace(0.2, 1.8, cfg.data.N)
    with torch.no_grad():
        pred = model(batch.tokens).raw[:, task.readout].double().numpy()
        got = batch_loss(model, batch.tokens, batch.target, task.readout, "mse", "all", weights).item()
    err = (pred - batch.target.double().numpy()) ** 2
    assert got == pytest.approx((err * weights.double().numpy()).mean(), rel=1e-5)


@pytest.mark.parametrize("sets", [["training.loss_positions=last"],
                                  ["training.curriculum={d_start: 2, d_inc: 1, n_start: 5, n_inc: 1, every: 10}"]])
def test_weights_need_every_position_at_full_size(sets):
    with pytest.raises(ConfigError, match="position_weights"):
        load_config("mixed_noise_cpu", sets + [WEIGHTED])


@pytest.mark.parametrize("config", ["default", "sparse_or_dense_cpu"])
def test_a_task_with_one_read_out_is_refused_when_the_config_loads(config):
    with pytest.raises(ConfigError, match="position_weights"):
        load_config(config, [WEIGHTED])


def test_training_steps_on_the_weighted_loss(tmp_path, monkeypatch):
    """The loss every optimiser step takes carries the weights (a loop that built its loss without them fails)."""
    seen = []

    def spy(*args):
        seen.append(args[-1])
        return real(*args)

    real = loop.batch_loss
    monkeypatch.setattr(loop, "batch_loss", spy)
    cfg = load_config("mixed_noise_cpu", TINY + [WEIGHTED])
    train(cfg, tmp_path / "run", progress=False)
    task = make_task(cfg)
    expected = position_weights(cfg, task)
    assert len(seen) == 9 and all(w is not None and torch.equal(w, expected) for w in seen)  # 1800 / 200 steps
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    np.testing.assert_allclose(record["train_position_weights"], expected.double().numpy(), rtol=1e-6)


def test_weighted_training_resumes_exactly_with_the_runs_own_weights(tmp_path, monkeypatch):
    """A resume takes the weights from the checkpoint, not from this code: changing how they are measured
    between the two halves leaves the resumed run bitwise equal to the uninterrupted one."""
    cfg = load_config("mixed_noise_cpu", TINY + ["training.epochs=3", WEIGHTED])
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "split", progress=False, max_minutes=1e-9)
    monkeypatch.setattr(loop, "POSITION_WEIGHT_SEQUENCES", 64)  # other weights, were they recomputed
    train(cfg, tmp_path / "split", resume=True, progress=False)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (tmp_path / "split" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("extra, train_label", [({}, "model (train)"),
                                                ({"train_target": "conditional_mean"}, "model (train, vs E[y | x, w])"),
                                                ({"train_position_weights": [0.5, 1.5]}, None)])
def test_the_curve_plot_shows_the_train_loss_only_on_the_test_losss_scale(extra, train_label):
    """A weighted train loss is a weighted mean, not comparable with the test curves: the plot leaves it out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selectlens.evaluate.runner import _plot_raw_curves

    metrics = [{"sequences": 100 * (i + 1), "test_loss": 1.0 / (i + 1), "train_loss": 0.9 / (i + 1),
                "baselines": {"bayes_posterior_mixture": 0.4}, **extra} for i in range(3)]
    fig, ax = plt.subplots()
    _plot_raw_curves(ax, metrics, None)
    labels = [line.get_label() for line in ax.get_lines()]
    plt.close(fig)
    assert "model (test)" in labels
    assert [lab for lab in labels if lab.startswith("model (train")] == ([train_label] if train_label else [])
