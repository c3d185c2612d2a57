"""Raw-data (interleaved) tasks: token layout, labels recomputed in numpy, σ frequencies, data files."""

import numpy as np
import pytest
import torch
from scipy import stats

from selectlens.config import ConfigError, load_config
from selectlens.tasks import (
    DataFileError, LinearOrLogisticTask, MixedNoiseRegressionTask, RawBatch, RawTask, load_task_batch, make_generator,
    make_task, save_task_batch,
)


def _cfg(task="mixed_noise_regression", *overrides):
    return load_config("mixed_noise_cpu", [f"data.task={task}", "data.N=7", "data.d_d=3", "data.layout=interleaved", *overrides])


def test_interleaved_token_layout():
    batch = make_task(_cfg()).sample(16, make_generator(0))
    B, N, d = 16, 7, 3
    assert isinstance(batch, RawBatch) and len(batch) == B
    assert batch.tokens.shape == (B, 2 * N, d + 1)
    assert torch.equal(batch.tokens[:, 0::2, :d], batch.x)  # x-token i at 2i = [x_i, 0]
    assert torch.all(batch.tokens[:, 0::2, d] == 0)
    assert torch.all(batch.tokens[:, 1::2, :d] == 0)  # y-token i at 2i+1 = [0…0, y_i]
    assert torch.equal(batch.tokens[:, 1::2, d], batch.y)
    assert torch.equal(batch.target, batch.y) and batch.target.shape == (B, N)
    assert batch.w.shape == (B, d) and batch.sigma.shape == (B,) and batch.is_regression.dtype == torch.bool
    assert bool(batch.is_regression.all())
    sub = batch[2:5]
    assert len(sub) == 3 and torch.equal(sub.w, batch.w[2:5])


def test_regression_labels_recomputed_in_numpy():
    """y = xᵀw/√d + σz: the residual divided by σ must be standard normal, and σ from noise_levels."""
    cfg = _cfg("mixed_noise_regression", "data.noise_levels=[0.2, 0.7]", "dtype=float64")
    assert isinstance(make_task(cfg), MixedNoiseRegressionTask)
    batch = make_task(cfg).sample(400, make_generator(1))
    x, w, y, s = (batch.x.numpy(), batch.w.numpy(), batch.y.numpy(), batch.sigma.numpy())
    clean = np.einsum("bnd,bd->bn", x, w) / np.sqrt(3)
    z = (y - clean) / s[:, None]
    assert set(np.unique(s)) == {0.2, 0.7}
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    # Rebuilding from the same x, w, z gives back the labels exactly; another σ only changes the noise.
    again = make_task(cfg).build(batch.x, batch.w, torch.from_numpy(z), batch.sigma, batch.is_regression)
    np.testing.assert_allclose(again.y.numpy(), y, atol=1e-12)


def test_sigma_frequencies_follow_noise_probs():
    cfg = _cfg("mixed_noise_regression", "data.noise_levels=[0.1, 0.5, 1.0]", "data.noise_probs=[0.2, 0.3, 0.5]")
    n = 6000
    sigma = make_task(cfg).sample(n, make_generator(2)).sigma
    for level, p in zip([0.1, 0.5, 1.0], [0.2, 0.3, 0.5]):
        k = int(torch.isclose(sigma, torch.tensor(level)).sum())
        assert stats.binomtest(k, n, p).pvalue > 1e-3, (level, k)
    uniform = make_task(_cfg()).sample(n, make_generator(3)).sigma
    k = int(torch.isclose(uniform, torch.tensor(0.1)).sum())
    assert stats.binomtest(k, n, 0.5).pvalue > 1e-3


def test_linear_or_logistic_types_and_labels():
    cfg = _cfg("linear_or_logistic", "data.p_regression=0.3", "dtype=float64")
    task = make_task(cfg)
    assert isinstance(task, LinearOrLogisticTask)
    n = 4000
    batch = task.sample(n, make_generator(4))
    reg = batch.is_regression.numpy()
    assert stats.binomtest(int(reg.sum()), n, 0.3).pvalue > 1e-3
    clean = np.einsum("bnd,bd->bn", batch.x.numpy(), batch.w.numpy())
    y = batch.y.numpy()
    np.testing.assert_array_equal(y[~reg], np.where(clean[~reg] >= 0, 1.0, -1.0))
    assert np.all(batch.sigma.numpy()[~reg] == 0) and np.all(np.isin(batch.sigma.numpy()[reg], [0.1, 0.5]))
    assert not np.all(np.isin(y[reg], [-1.0, 1.0]))


def test_seeded_and_independent_of_global_rng():
    task = make_task(_cfg("linear_or_logistic"))
    torch.manual_seed(5)
    a = task.sample(30, make_generator(9))
    torch.manual_seed(6)
    b = task.sample(30, make_generator(9))
    assert all(torch.equal(v, b.as_dict()[k]) for k, v in a.as_dict().items())
    assert not torch.equal(a.tokens, task.sample(30, make_generator(10)).tokens)


def test_config_keys_validated_and_sizes():
    cfg = _cfg()
    assert cfg.data.n_features == 4 and cfg.data.n_positions == 14 and cfg.data.layout == "interleaved"
    sel = load_config("model_selection")
    assert sel.data.task == "selection" and sel.data.n_positions == sel.data.N and make_task(sel).layout == "selection"
    bad = {
        "data.noise_probs=[0.5]": "noise_probs has 1 entries",
        "data.noise_probs=[0.5, 0.6]": "sum to 1",
        "data.noise_probs=[1.5, -0.5]": ">= 0",
        "data.noise_levels=[0.1, -1]": "noise_levels",
        "data.p_regression=1.5": "p_regression",
        "training.loss_positions=middle": "loss_positions",
        "training.loss=bce": "mse",
        "data.classification=true": "classification",
    }
    for override, words in bad.items():
        with pytest.raises(ConfigError, match=words):
            _cfg("mixed_noise_regression", override)


def test_raw_data_file_round_trip_and_shape_check(tmp_path):
    cfg = _cfg("linear_or_logistic")
    batch = make_task(cfg).sample(12, make_generator(0))
    path = save_task_batch(tmp_path / "raw.safetensors", batch, cfg)
    back, back_cfg = load_task_batch(path)
    assert isinstance(back, RawBatch) and back_cfg == cfg
    assert all(torch.equal(v, back.as_dict()[k]) for k, v in batch.as_dict().items())
    from safetensors.torch import load_file, save_file

    tensors = load_file(path)
    tensors["target"] = tensors["target"][:, :-1].contiguous()
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["task"] == "linear_or_logistic"
    save_file(tensors, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(DataFileError, match="'target' has shape"):
        load_task_batch(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("preset", ["mixed_noise_cpu", "linear_or_logistic_cpu", "mixed_noise"])
def test_raw_presets_validate_and_build(preset):
    from selectlens.model.gpt2 import ModelSpec, SelectionTransformer

    cfg = load_config(preset)
    layout = "interleaved" if preset == "mixed_noise" else "per_example"  # the CPU presets' recipe: docs/results.md#recipe
    assert isinstance(make_task(cfg), RawTask) and make_task(cfg).layout == layout
    spec = ModelSpec.from_config(cfg)
    assert (spec.n_features, spec.n_positions) == (cfg.data.d_d + 1, (2 if layout == "interleaved" else 1) * cfg.data.N)
    if preset == "mixed_noise":
        assert cfg.data.d_d >= 8
        return
    model = SelectionTransformer(spec)
    batch = make_task(cfg).sample(3, make_generator(0))
    assert model.predict_positions(batch.tokens, make_task(cfg).readout).shape == (3, cfg.data.N)
