"""training.position_weights: inverse_bayes_risk weighs every (sequence, position) term by 1 / the Bayes
posterior's risk given that prefix (baselines.raw.bayes_mixture_risk), checked against direct Gaussian
conditioning, against the realised error of the Bayes predictor, and for being a function of the prefix."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from selectlens.baselines import suite_for
from selectlens.baselines.raw import bayes_mixture, bayes_mixture_risk
from selectlens.config import ConfigError, load_config
from selectlens.tasks import make_generator, make_task
from selectlens.train import loop, train
from selectlens.train.loop import loss_weights, sequence_weights

SIGMAS, PROBS = [0.1, 0.5], [0.3, 0.7]
BAYES = "training.position_weights=inverse_bayes_risk"
TINY = ["data.train_samp_per_class=2000", "training.batch_size=200", "model.n_embd=32", "model.n_layer=1",
        "model.n_head=2", "eval.temperature_sequences=200", "training.epochs=1", "training.save_every_epochs=1"]


def _risk_by_conditioning(X, Y, sigmas, probs, observed):
    """tr of the mixture posterior's covariance of v = w/√d (+ E[σ²] for the label), each level's posterior
    by the d × d Gaussian update, its weight from scipy's marginal likelihood of Y ~ N(0, XXᵀ/d + σ²I)."""
    n, d = X.shape
    logw, means, spreads = [], [], []
    for s, p in zip(sigmas, probs):
        prec = X.T @ X / s**2 + d * np.eye(d)  # prior precision d·I, likelihood XᵀX/σ²
        cov = np.linalg.inv(prec)
        means.append(cov @ X.T @ Y / s**2)
        spreads.append(np.trace(cov))
        evidence = multivariate_normal(np.zeros(n), X @ X.T / d + s**2 * np.eye(n)).logpdf(Y) if n else 0.0
        logw.append(math.log(p) + evidence)
    post = np.exp(np.array(logw) - max(logw))
    post /= post.sum()
    means = np.array(means)
    mean = post @ means
    risk = post @ (np.array(spreads) + (means**2).sum(1)) - mean @ mean
    return risk + (post @ np.array(sigmas) ** 2 if observed else 0.0)


@pytest.mark.parametrize("observed", [False, True])
def test_the_prefix_risk_matches_direct_gaussian_conditioning(observed):
    g = torch.Generator().manual_seed(3)
    B, N, d = 5, 9, 3
    x = torch.randn(B, N, d, generator=g, dtype=torch.float64)
    w = torch.randn(B, d, generator=g, dtype=torch.float64)
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)[torch.randint(2, (B,), generator=g)]
    y = (x @ w.unsqueeze(-1)).squeeze(-1) / math.sqrt(d) + sigma.unsqueeze(-1) * torch.randn(B, N, generator=g,
                                                                                             dtype=torch.float64)
    risk = bayes_mixture_risk(x, y, SIGMAS, PROBS, observed=observed)
    assert risk.shape == (B, N)
    for s in range(B):
        for n in range(N):
            want = _risk_by_conditioning(x[s, :n].numpy(), y[s, :n].numpy(), SIGMAS, PROBS, observed)
            assert float(risk[s, n]) == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("observed", [False, True])
def test_the_prefix_risk_is_the_bayes_predictors_expected_error(observed):
    """Averaged over sequences, the risk each prefix predicts equals the Bayes mixture's realised squared error
    against the label's mean (or the label): the risk is of the right predictor and on the right target."""
    cfg = load_config("mixed_noise_cpu", ["data.d_d=4", "data.N=12", "data.noise_probs=[0.3, 0.7]"])
    task = make_task(cfg)
    batch = task.sample(40000, make_generator(11))
    pred, _ = bayes_mixture(batch.x, batch.y, cfg.data.noise_levels, cfg.data.noise_weights)
    target = batch.y if observed else task.conditional_mean(batch)
    err = (pred - target.double()) ** 2
    risk = bayes_mixture_risk(batch.x, batch.y, cfg.data.noise_levels, cfg.data.noise_weights, observed=observed)
    for n in range(cfg.data.N):
        sem = float(err[:, n].std()) / math.sqrt(len(err))
        assert abs(float(err[:, n].mean() - risk[:, n].mean())) < 4 * sem + 1e-9, n


def _weights(cfg, batch, task=None):
    task = task or make_task(cfg)
    fallback, scale = loss_weights(cfg, task)
    return sequence_weights(fallback, task, batch, risk_scale=scale, training=cfg.training)


@pytest.mark.parametrize("preset", ["mixed_noise_cpu", "linear_or_logistic_cpu"])
def test_a_terms_weight_depends_only_on_the_pairs_before_it(preset):
    """The weights keep every position's minimiser only if they are a function of what the model has read:
    changing the latents (σ, w) changes none of them, and changing the pairs from position p on changes none
    at positions ≤ p. (linear_or_logistic: before any label, position 0, the type's row is used; both types'
    mean is 0 there.)"""
    cfg = load_config(preset, ["data.d_d=3", "data.N=8", BAYES])
    task = make_task(cfg)
    batch = task.sample(400, make_generator(5))
    weights = _weights(cfg, batch, task)
    g = torch.Generator().manual_seed(9)
    latents = replace(batch, sigma=batch.sigma.flip(0), w=torch.randn(batch.w.shape, generator=g),
                      is_regression=batch.is_regression.flip(0))
    # every term with a closed form (all of mixed_noise; linear_or_logistic's regression prefixes and position
    # 0); a sign prefix takes its type's row, a type its labels reveal (a regression label is ±1 w.p. 0)
    closed = ~suite_for(task).prefix_risk(batch, observed=False).isnan()
    assert closed[:, 0].all() and (closed.all() if preset == "mixed_noise_cpu" else not closed.all())
    assert torch.equal(_weights(cfg, latents, task)[closed], weights[closed])
    p = 4
    later = replace(batch, x=torch.cat([batch.x[:, :p], torch.randn(400, 4, 3, generator=g)], 1),
                    y=torch.cat([batch.y[:, :p], torch.randn(400, 4, generator=g)], 1))
    changed = _weights(cfg, later, task)
    assert torch.equal(changed[:, : p + 1], weights[:, : p + 1])
    assert not torch.equal(changed[:, p + 1 :], weights[:, p + 1 :])  # the check can fail


def test_the_weights_are_one_over_the_prefix_risk_with_mean_one():
    cfg = load_config("mixed_noise_cpu", ["data.d_d=4", "data.N=10", BAYES])
    task = make_task(cfg)
    batch = task.sample(20000, make_generator(21))
    weights = _weights(cfg, batch, task).double()
    risk = bayes_mixture_risk(batch.x, batch.y, cfg.data.noise_levels, cfg.data.noise_weights)
    ratio = weights * risk  # the scale, the same for every term
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.mean())), rtol=1e-5, atol=0)
    assert float(weights.mean()) == pytest.approx(1.0, rel=0.05)  # scaled on other sequences (stacking stream)
    low = (batch.sigma == 0.1).unsqueeze(-1)
    assert float(weights[:, -1][low[:, 0]].mean()) > 10 * float(weights[:, -1][~low[:, 0]].mean())


def test_linear_or_logistic_signs_take_their_per_type_row():
    """Classification prefixes (every label ±1) have no closed form: their terms take the reference's per-type
    row; regression prefixes 1 / the mixture's risk; before any label, 1 / the prior's E[target²] = 1 for both
    types (the conditional-mean target: E[(xᵀw/√d)²] = 1 and sign² = 1)."""
    cfg = load_config("linear_or_logistic_cpu", ["data.d_d=3", "data.N=8", BAYES, "training.target=conditional_mean",
                                                 "training.bayes_risk_power=1"])  # the preset's β is 0.5
    task = make_task(cfg)
    batch = task.sample(600, make_generator(4))
    fallback, scale = loss_weights(cfg, task)
    weights = _weights(cfg, batch, task)
    cls = ~batch.is_regression
    assert fallback.shape == (2, 8) and cls.any() and (~cls).any()
    assert torch.equal(weights[cls][:, 1:], fallback[1, 1:].expand(int(cls.sum()), -1))
    risk = bayes_mixture_risk(batch.x, batch.y, cfg.data.noise_levels, cfg.data.noise_weights)
    torch.testing.assert_close(weights[~cls][:, 1:].double(), (scale / risk[~cls][:, 1:]), rtol=1e-6, atol=0)
    torch.testing.assert_close(weights[:, 0].double(), torch.full((600,), scale, dtype=torch.float64), rtol=1e-6, atol=0)


def test_linear_or_logistic_prior_risk_on_the_label():
    """Against the label, position 0's risk is E[y²] = p(1 + E[σ²]) + (1 − p), from the config's numbers."""
    cfg = load_config("linear_or_logistic_cpu", ["data.d_d=3", "data.N=6", "data.p_regression=0.3",
                                                 "data.noise_probs=[0.25, 0.75]", "training.target=observed"])
    task = make_task(cfg)
    batch = task.sample(50, make_generator(2))
    risk = suite_for(task).prefix_risk(batch, observed=True)
    want = 0.3 * (1 + 0.25 * 0.1**2 + 0.75 * 0.5**2) + 0.7
    torch.testing.assert_close(risk[:, 0], torch.full((50,), want, dtype=torch.float64))
    y = task.sample(200000, make_generator(3)).y[:, 0].double()  # and it is the labels' second moment
    assert float((y**2).mean()) == pytest.approx(want, rel=0.02)


@pytest.mark.parametrize("sets", [["data.task=task_diversity", "data.pool_size=4", "data.noise_levels=[0.5]"],
                                  ["data.task=my_task:LaplaceNoiseTask"]])
def test_a_family_whose_prior_is_not_the_mixtures_is_refused(sets, monkeypatch):
    """The raw suites' mixture risk is the Bayes risk of the mixed-noise prior only: a family that inherits the
    suite with another prior (task diversity's pool, the example's Laplace noise) is refused, not misweighted."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    cfg = load_config("mixed_noise_cpu", sets + [BAYES])
    with pytest.raises(ConfigError, match="closed-form Bayes risk"):
        loss_weights(cfg, make_task(cfg))


def test_a_loss_other_than_squared_error_is_refused():
    """The raw presets refuse bce when the config loads; a family that allowed it would still not get weights
    in squared-error units for a log-loss."""
    with pytest.raises(ConfigError, match="loss"):
        load_config("mixed_noise_cpu", [BAYES, "training.loss=bce"])
    cfg = load_config("mixed_noise_cpu", [BAYES])
    cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"loss": "bce"})})
    with pytest.raises(ConfigError, match="squared error"):
        loss_weights(cfg, make_task(cfg))


@pytest.mark.parametrize("power, sets", [(1.0, []), (0.5, []), (1.0, ["training.target=observed"]),
                                         (0.5, ["data.layout=interleaved", "training.target=observed"])])
def test_training_steps_on_the_prefix_risk_weights(tmp_path, monkeypatch, power, sets):
    """Every step's weights are scale / risk^β, the risk computed from the step's own tokens (x and the earlier labels
    read back from the per-example layout); the record and the checkpoint keep the scale."""
    seen = []

    def spy(model, tokens, target, readout, kind, positions, weights):
        seen.append((tokens.clone(), weights))
        return real(model, tokens, target, readout, kind, positions, weights)

    real = loop.batch_loss
    monkeypatch.setattr(loop, "batch_loss", spy)
    cfg = load_config("mixed_noise_cpu", TINY + sets + [BAYES, f"training.bayes_risk_power={power}"])
    train(cfg, tmp_path / "run", progress=False)
    observed = cfg.training.target == "observed"
    _, scale = loss_weights(cfg, make_task(cfg))
    d = cfg.data.d_d
    assert len(seen) == 9
    for tokens, weights in seen:
        if cfg.data.layout == "interleaved":  # [x_i, 0] at 2i, [0…0, y_i] at 2i + 1
            x, y = tokens[:, 0::2, :d].double(), tokens[:, 1::2, d].double()
        else:  # [x_i, y_{i−1}]; y_{N−1} is not in the tokens and no weight needs it
            x, y = tokens[..., :d].double(), torch.cat([tokens[:, 1:, d], tokens[:, :1, d]], 1).double()
        risk = bayes_mixture_risk(x, y, cfg.data.noise_levels, cfg.data.noise_weights, observed=observed)
        want = scale / risk**power
        torch.testing.assert_close(weights.double(), want, rtol=1e-5, atol=0)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["train_prefix_risk_scale"] == pytest.approx(scale, rel=1e-12)


def test_training_with_prefix_risk_weights_resumes_exactly(tmp_path, monkeypatch):
    """A resume takes the scale and the fallback rows from the checkpoint: measuring them on other sequences
    between the two halves leaves the resumed run bitwise equal to the uninterrupted one."""
    cfg = load_config("linear_or_logistic_cpu", TINY + ["training.epochs=3", BAYES])
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "split", progress=False, max_minutes=1e-9)
    monkeypatch.setattr(loop, "POSITION_WEIGHT_SEQUENCES", 64)  # another scale, were it recomputed
    assert loss_weights(cfg, make_task(cfg))[1] != pytest.approx(
        json.loads((tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()[0])["train_prefix_risk_scale"])
    train(cfg, tmp_path / "split", resume=True, progress=False)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (tmp_path / "split" / "model.safetensors").read_bytes()


def test_a_power_below_one_tempers_the_weights():
    """bayes_risk_power β: the weights are scale / risk^β — their log-spread is β times that of β = 1 — and
    still mean 1."""
    sets = ["data.d_d=4", "data.N=10", BAYES]
    task = make_task(load_config("mixed_noise_cpu", sets))
    batch = task.sample(20000, make_generator(21))
    full = _weights(load_config("mixed_noise_cpu", sets), batch, task).double()
    cfg = load_config("mixed_noise_cpu", sets + ["training.bayes_risk_power=0.5"])
    fallback, scale = loss_weights(cfg, task)
    half = sequence_weights(fallback, task, batch, risk_scale=scale, training=cfg.training).double()
    risk = bayes_mixture_risk(batch.x, batch.y, cfg.data.noise_levels, cfg.data.noise_weights)
    ratio = half * risk.sqrt()
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio.mean())), rtol=1e-5, atol=0)
    assert float(half.log().std()) == pytest.approx(0.5 * float(full.log().std()), rel=1e-6)
    assert float(half.mean()) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("sets, message", [(["training.bayes_risk_power=0.5"], "inverse_bayes_risk only"),
                                           ([BAYES, "training.bayes_risk_power=0"], "bayes_risk_power"),
                                           ([BAYES, "training.bayes_risk_power=1.5"], "bayes_risk_power")])
def test_a_bad_power_is_refused_when_the_config_loads(sets, message):
    with pytest.raises(ConfigError, match=message):
        load_config("mixed_noise_cpu", sets)


@pytest.mark.parametrize("sets", [["training.position_weights=uniform"], ["training.curriculum={d_start: 2, d_inc: 1, n_start: 5, n_inc: 3, every: 100}"]])
def test_leaving_the_presets_weights_says_to_reset_the_power(tmp_path, sets):
    """linear_or_logistic_cpu weighs at β = 0.5: switching its weights off (or adding what they cannot train
    with) is one error line on the command line that names the second key to set, and writes nothing."""
    import subprocess
    import sys

    args = [a for s in sets for a in ("--set", s)]
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "selectlens", "train", "--config", "linear_or_logistic_cpu", *args,
                          "--out", str(out)], capture_output=True, text=True)
    assert res.returncode != 0 and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "training.bayes_risk_power=1" in res.stderr and not out.exists()
    fixed = sets + ["training.bayes_risk_power=1"] + (["training.position_weights=uniform"] if "curriculum" in sets[0] else [])
    assert load_config("linear_or_logistic_cpu", fixed).training.position_weights == "uniform"


@pytest.mark.parametrize("scale", [None, "1", -0.5, float("nan")])
def test_a_checkpoint_without_a_usable_scale_is_a_one_line_error(tmp_path, scale):
    """Resuming a prefix-risk-weighted run whose checkpoint lost its scale names the file and the key; nothing
    of the run is changed."""
    import subprocess
    import sys

    from selectlens.rundir import checkpoint_dirs

    cfg = load_config("mixed_noise_cpu", TINY + [BAYES])
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    state_file = checkpoint_dirs(run)[-1][1] / "state.pt"
    saved = torch.load(state_file, weights_only=True)
    saved["prefix_risk_scale"] = scale
    torch.save(saved, state_file)
    before = (run / "metrics.jsonl").read_bytes()
    out = subprocess.run([sys.executable, "-m", "selectlens", "train", "--out", str(run), "--resume", "--quiet"],
                         capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "prefix_risk_scale" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert (run / "metrics.jsonl").read_bytes() == before
