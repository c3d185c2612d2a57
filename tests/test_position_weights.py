"""training.position_weights: inverse_reference weighs each read-out position's loss by 1 / the reference
predictor's risk there (mean 1); eval stays unweighted."""

import json
import math

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
    cfg = load_config("mixed_noise_cpu", ["training.position_weights=uniform"])
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


@pytest.mark.parametrize("preset, option", [("mixed_noise_cpu", "training.position_weights=inverse_reference"),
                                            ("linear_or_logistic_cpu", "training.position_weights=inverse_reference_per_type")])
def test_weighted_training_resumes_exactly_with_the_runs_own_weights(tmp_path, monkeypatch, preset, option):
    """A resume takes the weights from the checkpoint, not from this code: changing how they are measured
    between the two halves leaves the resumed run bitwise equal to the uninterrupted one."""
    cfg = load_config(preset, TINY + ["training.epochs=3", option, "training.bayes_risk_power=1"])
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
    assert "model (full-size test split)" not in labels


def test_the_curve_plot_of_a_curriculum_run_adds_the_full_size_split():
    """A curriculum run's test split is at each epoch's point; the plot adds the model on the full-size split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from selectlens.evaluate.runner import _plot_raw_curves

    metrics = [{"sequences": 100 * (i + 1), "test_loss": 1.0 / (i + 1), "train_loss": 0.9 / (i + 1), "curriculum": {"d": 2, "n": 5},
                "baselines": {"bayes_posterior_mixture": 0.4}, "full_size": {"test_loss": 3.0 / (i + 1), "baselines": {}}}
               for i in range(3)]
    metrics[0]["full_size"] = {"test_loss": 3.0, "baselines": {"bayes_posterior_mixture": 0.8}}
    metrics[-1]["full_size"]["baselines"] = {"bayes_posterior_mixture": 0.8}
    metrics[1].pop("full_size")  # a run resumed across versions: an epoch without the full-size split
    fig, ax = plt.subplots()
    _plot_raw_curves(ax, metrics, None)
    lines = {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}
    title, (low, high) = ax.get_title(), ax.get_ylim()
    plt.close(fig)
    model, ref = lines["model (full-size test split)"], lines["bayes_posterior_mixture (full-size test split)"]
    assert model[0] == 3.0 and math.isnan(model[1]) and model[2] == 1.0 and ref[2] == 0.8 and "full-size split" in title
    assert low < 0.8 and 1.0 < high  # the last epoch's full-size values in view (the point's curves end at 1/3)


def test_the_beats_panel_of_a_curriculum_run_compares_on_the_full_task():
    from selectlens.evaluate.runner import full_size_records

    plain = [{"sequences": 10, "test_loss": 1.0, "baselines": {"b": 2.0}}]
    grown = [dict(plain[0], curriculum={"d": 2, "n": 5}, full_size={"test_loss": 4.0, "baselines": {"b": 3.0}})]
    assert full_size_records(plain) is plain
    assert full_size_records(grown) == [{"sequences": 10, "test_loss": 4.0, "baselines": {"b": 3.0}}]
    assert full_size_records(grown + [dict(plain[0], curriculum={"d": 2, "n": 5})])[0]["test_loss"] == 1.0  # mixed


PER_TYPE = "training.position_weights=inverse_reference_per_type"
# linear_or_logistic_cpu weighs by the Bayes risk at β = 0.5; any other weights need β back at 1
POWER_1 = "training.bayes_risk_power=1"


def _ridge_risk_on_signs(d: int, n_max: int, lam: float, draws: int = 20000) -> np.ndarray:
    """Per prefix n, the squared error of ridge (λ, no intercept) fitted to sign labels y = sign(xᵀw), against
    the next label: what a one-σ Bayes mixture (ridge at λ = dσ²) scores on classification sequences."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((draws, n_max, d))
    w = rng.standard_normal((draws, d))
    y = np.where(np.einsum("bnd,bd->bn", x, w) >= 0, 1.0, -1.0)
    out = []
    for n in range(n_max):
        xtx = np.einsum("bni,bnj->bij", x[:, :n], x[:, :n]) + lam * np.eye(d)
        coef = np.linalg.solve(xtx, np.einsum("bni,bn->bi", x[:, :n], y[:, :n])[..., None])[..., 0]
        out.append(((np.einsum("bi,bi->b", x[:, n], coef) - y[:, n]) ** 2).mean())
    return np.array(out)


def test_per_type_weights_follow_each_types_own_reference_risk():
    """linear_or_logistic with one σ: the reference (the Bayes mixture) is ridge at λ = dσ² on every sequence.
    On regression sequences its risk against E[y | x, w] is the posterior risk's closed form; on classification
    ones, ridge on sign labels (numpy, own draws). Each type's weights are 1 / its own risk, scaled to mean 1
    over the training distribution (p_regression of the sequences regression)."""
    sigma, d, n, p = 0.3, 4, 8, 0.7
    cfg = load_config("linear_or_logistic_cpu", [f"data.d_d={d}", f"data.N={n}", f"data.noise_levels=[{sigma}]",
                                                 f"data.p_regression={p}", "training.target=conditional_mean", PER_TYPE, POWER_1])
    weights = position_weights(cfg, make_task(cfg)).double().numpy()
    assert weights.shape == (2, n)
    inverse = 1 / np.stack([_posterior_risk(d, n, sigma), _ridge_risk_on_signs(d, n, d * sigma**2)])
    expected = inverse / (p * inverse[0].mean() + (1 - p) * inverse[1].mean())
    np.testing.assert_allclose(weights, expected, rtol=0.06)
    assert weights[0, -1] > 5 * weights[1, -1]  # late regression positions carry the gradient, not the signs


@pytest.mark.parametrize("p", [1.0, 0.97])
def test_a_type_too_rare_to_measure_takes_the_pooled_weights(p):
    """With classification absent (p_regression 1) or rarer than MIN_TYPE_SEQUENCES of the measuring sequences,
    its row is the pooled per-position weights (those of inverse_reference, up to the table's one scale that makes
    the mean 1), and the table still has both rows."""
    sets = ["data.d_d=3", "data.N=6", "training.target=conditional_mean", f"data.p_regression={p}"]
    cfg = load_config("linear_or_logistic_cpu", [*sets, PER_TYPE, POWER_1])
    weights = position_weights(cfg, make_task(cfg))
    pooled = position_weights(load_config("linear_or_logistic_cpu", [*sets, "training.position_weights=inverse_reference", POWER_1]),
                              make_task(cfg))
    assert weights.shape == (2, 6) and (1 - p) * loop.POSITION_WEIGHT_SEQUENCES < loop.MIN_TYPE_SEQUENCES
    ratio = weights[1] / pooled
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio.mean().item()))
    if p == 1.0:  # every sequence regression: the two measures are one, scale included
        torch.testing.assert_close(weights, torch.stack([pooled, pooled]))
    else:  # the regression row is measured on its own sequences: not proportional to the pooled one
        own = weights[0] / pooled
        assert (own.max() - own.min()) / own.mean() > 0.01


def test_per_type_weights_need_a_family_with_types():
    """Refused when the config loads (a sweep's grid or an ablation arm fails before any trial starts)."""
    with pytest.raises(ConfigError, match="one type of sequence"):
        load_config("mixed_noise_cpu", [PER_TYPE])


def test_a_per_sequence_weighted_loss_is_the_weighted_mean_of_squared_errors():
    cfg = load_config("linear_or_logistic_cpu", TINY)
    torch.manual_seed(0)
    model, task = build_model(cfg), make_task(cfg)
    batch = task.sample(50, make_generator(1))
    weights = torch.rand(50, cfg.data.N, generator=torch.Generator().manual_seed(2)) * 2
    with torch.no_grad():
        pred = model(batch.tokens).raw[:, task.readout].double().numpy()
        got = batch_loss(model, batch.tokens, batch.target, task.readout, "mse", "all", weights).item()
    err = (pred - batch.target.double().numpy()) ** 2
    assert got == pytest.approx((err * weights.double().numpy()).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        batch_loss(model, batch.tokens, batch.target, task.readout, "mse", "all", weights[:, :-1])


def test_training_steps_weigh_each_sequence_by_its_type(tmp_path, monkeypatch):
    """Every step's weights are per sequence: the classification row where the tokens' labels are all ±1 (what
    the model reads), the regression row elsewhere; the record and the checkpoint keep the [2, P] table."""
    seen = []

    def spy(model, tokens, target, readout, kind, positions, weights):
        seen.append((tokens[:, 1:, -1].clone(), weights))
        return real(model, tokens, target, readout, kind, positions, weights)

    real = loop.batch_loss
    monkeypatch.setattr(loop, "batch_loss", spy)
    cfg = load_config("linear_or_logistic_cpu", TINY + [PER_TYPE, POWER_1, "training.target=conditional_mean"])
    train(cfg, tmp_path / "run", progress=False)
    table = position_weights(cfg, make_task(cfg))
    assert len(seen) == 9
    for labels, weights in seen:
        signs = (labels.abs() == 1).all(dim=1)  # classification sequences, as the prefix shows them
        assert weights.shape == (labels.shape[0], cfg.data.N) and signs.any() and (~signs).any()
        assert torch.equal(weights[signs], table[1].expand(int(signs.sum()), -1))
        assert torch.equal(weights[~signs], table[0].expand(int((~signs).sum()), -1))
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    np.testing.assert_allclose(record["train_position_weights"], table.double().numpy(), rtol=1e-6)
