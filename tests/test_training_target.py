"""training.target: conditional_mean trains against E[y_i | x_i, w] — the label without its noise — while the
model's inputs stay the noisy pairs and eval keeps scoring the observed y."""

import json
import math

import numpy as np
import pytest
import torch

from selectlens.config import ConfigError, load_config
from selectlens.tasks import make_generator, make_task
from selectlens.train import train

TINY = ["data.train_samp_per_class=2000", "training.batch_size=200", "model.n_embd=32", "model.n_layer=1",
        "model.n_head=2", "eval.temperature_sequences=200", "training.epochs=1", "training.save_every_epochs=1",
        "training.position_weights=uniform"]  # the train losses compared below are plain means


def test_conditional_mean_is_the_noise_free_label():
    task = make_task(load_config("linear_or_logistic_cpu", ["data.d_d=4", "data.N=6"]))
    b = task.sample(300, make_generator(3))
    x, w, y = b.x.double().numpy(), b.w.double().numpy(), b.y.double().numpy()
    reg = b.is_regression.numpy()
    mean = task.conditional_mean(b).double().numpy()
    expected = np.einsum("bnd,bd->bn", x, w) / math.sqrt(4)
    np.testing.assert_allclose(mean[reg], expected[reg], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mean[~reg], y[~reg])  # sign(xᵀw): no noise to remove
    assert 0 < reg.sum() < 300
    noise = (y[reg] - mean[reg]) / b.sigma.numpy()[reg][:, None]  # the residual is σz, z ~ N(0, 1)
    assert abs(noise.std() - 1) < 0.05 and abs(noise.mean()) < 0.05


def test_curriculum_batches_use_the_reduced_problems_mean():
    task = make_task(load_config("mixed_noise_cpu"))
    full, small = task.sample_at(100, make_generator(0), 3, 6)
    mean = task.conditional_mean(small)
    expected = np.einsum("bnd,bd->bn", small.x.double().numpy(), small.w.double().numpy()) / math.sqrt(3)
    np.testing.assert_allclose(mean.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_only_tasks_with_a_conditional_mean_accept_it():
    with pytest.raises(ConfigError, match="training.target conditional_mean"):
        load_config("default", ["training.target=conditional_mean"])
    with pytest.raises(ConfigError, match="training.target conditional_mean"):
        load_config("sparse_or_dense_cpu", ["training.target=conditional_mean"])
    assert load_config("task_diversity_cpu", ["training.target=conditional_mean"]).training.target == "conditional_mean"


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


CURRICULUM = "training.curriculum={d_start: 2, d_inc: 1, n_start: 20, n_inc: 0, every: 100000}"  # d stays 2


@pytest.mark.parametrize("config, sets, noise", [
    ("mixed_noise_cpu", [], (0.1**2 + 0.5**2) / 2),
    ("mixed_noise_cpu", [CURRICULUM], (0.1**2 + 0.5**2) / 2),  # the reduced batches' own mean (1/√d_eff)
    # classification sequences have no noise (TINY trains unweighted: the preset's β goes back to 1 with it)
    ("linear_or_logistic_cpu", ["data.p_regression=0.5", "training.bayes_risk_power=1"], 0.5 * (0.1**2 + 0.5**2) / 2),
])
def test_training_loss_drops_by_the_noise_variance_and_test_loss_stays_observed(tmp_path, config, sets, noise):
    """With a learning rate too small to move the model, the two targets see the same sequences and the same
    predictions f, so the train losses differ by mean[(f − y)² − (f − m)²] = mean σ²z² + 2·mean (m − f)σz:
    E σ² plus a cross term whose sd is ~1e-3 here. A wrong mean (e.g. a reduced batch scaled by the full
    1/√d) adds E[(m' − m)²]-sized terms. The test loss scores y both ways."""
    runs = {}
    for target in ("observed", "conditional_mean"):
        cfg = load_config(config, TINY + sets + ["training.lr=1e-12", "training.warmup_steps=0",
                                                 f"training.target={target}"])
        train(cfg, tmp_path / target, progress=False)
        runs[target] = _records(tmp_path / target)[-1]
    observed, denoised = runs["observed"], runs["conditional_mean"]
    assert observed["train_loss"] - denoised["train_loss"] == pytest.approx(noise, abs=0.01)
    assert denoised["test_loss"] == pytest.approx(observed["test_loss"], rel=1e-5)
    assert denoised["train_target"] == "conditional_mean" and "train_target" not in observed


def test_a_family_with_its_own_labels_must_say_their_mean(tmp_path, monkeypatch):
    """A user family that makes its own labels (its own ``build``) does not inherit RawTask's mean: the option
    is refused in one line before anything is written."""
    from conftest import ROOT, run_cli

    (tmp_path / "own_labels.py").write_text(
        "from selectlens.tasks.raw import RawTask\n"
        "class ScaledLabels(RawTask):\n"
        "    name = 'scaled_labels'\n"
        "    def build(self, x, w, z, sigma, is_regression):\n"
        "        return super().build(x, w, 2 * z, sigma, is_regression)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    run = tmp_path / "scaled"
    res = run_cli("train", "--config", "mixed_noise_cpu", "--set", "data.task=own_labels:ScaledLabels",
                  "--set", "training.target=conditional_mean", "--out", str(run), cwd=ROOT)
    assert res.returncode != 0 and res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert "does not define its labels' mean" in res.stderr and not run.exists()


def test_conditional_mean_target_trains_and_resumes_exactly(tmp_path):
    sets = TINY + ["training.epochs=3", "training.target=conditional_mean"]
    cfg = load_config("mixed_noise_cpu", sets)
    train(cfg, tmp_path / "whole", progress=False)
    train(cfg, tmp_path / "split", progress=False, max_minutes=1e-9)
    train(cfg, tmp_path / "split", resume=True, progress=False)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (tmp_path / "split" / "model.safetensors").read_bytes()
    observed = load_config("mixed_noise_cpu", TINY + ["training.epochs=3", "training.target=observed"])
    train(observed, tmp_path / "observed", progress=False)
    a = torch.tensor([r["train_loss"] for r in _records(tmp_path / "whole")])
    b = torch.tensor([r["train_loss"] for r in _records(tmp_path / "observed")])
    assert bool((a < b).all())  # against the noise-free target the loss has no σ² floor
