"""Training and prediction on the raw-data (interleaved) tasks."""

import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from selectlens.baselines.raw import make_raw_baselines
from selectlens.config import load_config
from selectlens.model.gpt2 import ModelSpec, SelectionTransformer
from selectlens.rundir import checkpoint_dirs, load_run_model, read_jsonl
from selectlens.tasks import load_task_batch, make_generator, make_task
from selectlens.train import train
from selectlens.train.loop import batch_loss, evaluate_split

TINY = ["data.N=6", "data.d_d=3", "data.layout=interleaved", "data.train_samp_per_class=200", "training.batch_size=32",
        "training.save_every_epochs=2", "training.warmup_steps=0", "model.n_embd=16", "model.n_layer=2",
        "model.n_head=2", "eval.sequences=300"]
TINY_SET = [a for o in TINY for a in ("--set", o)]


def _cfg(preset="mixed_noise_cpu", *extra):
    return load_config(preset, TINY + list(extra))


def _model_and_batch(cfg, n=10):
    torch.manual_seed(0)
    model = SelectionTransformer(ModelSpec.from_config(cfg))
    return model, make_task(cfg).sample(n, make_generator(1))


def test_loss_over_all_or_last_x_positions_matches_numpy():
    cfg = _cfg()
    model, batch = _model_and_batch(cfg)
    readout = make_task(cfg).readout
    raw = model(batch.tokens).raw.detach().numpy()  # [B, 2N]
    err = (raw[:, 0::2] - batch.target.numpy()) ** 2  # x-tokens are the even positions
    assert raw.shape == (10, 12)
    np.testing.assert_allclose(batch_loss(model, batch.tokens, batch.target, readout, "mse", "all").item(), err.mean(), rtol=1e-5)
    np.testing.assert_allclose(batch_loss(model, batch.tokens, batch.target, readout, "mse", "last").item(), err[:, -1].mean(), rtol=1e-5)
    # "last" reads only position 2N−2: its gradient does not reach the read-out through the other positions.
    target = batch.target.clone()
    target[:, :-1] += 100.0
    assert batch_loss(model, batch.tokens, target, readout, "mse", "last").item() == pytest.approx(err[:, -1].mean(), rel=1e-5)


def test_evaluate_raw_split_scores_model_and_baselines_on_same_sequences():
    cfg = _cfg("linear_or_logistic_cpu")
    model, batch = _model_and_batch(cfg, 40)
    task = make_task(cfg)
    baselines = make_raw_baselines(task)
    out = evaluate_split(model, task, batch, baselines, "mse", "all")
    pred = model.predict_positions(batch.tokens, task.readout).numpy()
    y = batch.target.numpy()
    assert out["test_loss"] == pytest.approx(((pred - y) ** 2).mean(), rel=1e-5)
    assert out["test_loss_last"] == pytest.approx(((pred[:, -1] - y[:, -1]) ** 2).mean(), rel=1e-5)
    assert set(out["baselines"]) == set(baselines) and "type_detector" in out["baselines"]
    avg = np.einsum("bnd,bd->bn", batch.x.numpy(), np.zeros((40, 3)))  # averaging predicts 0 at n = 0
    np.testing.assert_allclose(baselines["averaging"](batch).numpy()[:, 0], avg[:, 0])
    last = evaluate_split(model, task, batch, baselines, "mse", "last")
    ls = baselines["bayes_posterior_mixture"](batch).numpy()
    assert last["baselines"]["bayes_posterior_mixture"] == pytest.approx(((ls[:, -1] - y[:, -1]) ** 2).mean(), rel=1e-5)


def test_raw_training_writes_metrics_and_resumes_bitwise(tmp_path):
    cfg = _cfg("mixed_noise_cpu", "training.epochs=3")
    res = train(cfg, tmp_path / "full", progress=False)
    lines = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert res.epoch == 3 and [r["sequences"] for r in lines] == [180, 360, 540]
    for r in lines:
        assert np.isfinite(r["test_loss"]) and np.isfinite(r["test_loss_last"])
        assert {"bayes_posterior_mixture", "oracle_sigma_ridge", "least_squares"} <= set(r["baselines"])
    model, _ = load_run_model(tmp_path / "full")
    assert (model.spec.n_features, model.spec.n_positions) == (4, 12)
    part = tmp_path / "part"
    train(cfg, part, progress=False, max_minutes=1e-9)
    assert [e for e, _ in checkpoint_dirs(part)] == [1]
    train(cfg, part, resume=True, progress=False)
    a, b = load_file(tmp_path / "full" / "model.safetensors"), load_file(part / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "full" / "metrics.jsonl").read_text() == (part / "metrics.jsonl").read_text()


def test_cli_data_train_predict_round_trip(cli, tmp_path):
    data = tmp_path / "raw.safetensors"
    res = cli("data", "--config", "linear_or_logistic_cpu", *TINY_SET, "--sequences", "25", "--out", str(data))
    assert res.returncode == 0, res.stderr
    tensors = load_file(data)
    assert set(tensors) == {"tokens", "target", "x", "y", "w", "sigma", "is_regression"}
    assert tensors["tokens"].shape == (25, 12, 4) and tensors["target"].shape == (25, 6)
    run = tmp_path / "run"
    res = cli("train", "--config", "linear_or_logistic_cpu", *TINY_SET, "--set", "training.epochs=1",
              "--out", str(run), "--quiet")
    assert res.returncode == 0, res.stderr
    printed = float(re.search(r"\(bayes_posterior_mixture ([0-9.]+)\)", res.stdout).group(1))  # the reference
    assert printed == pytest.approx(read_jsonl(run / "metrics.jsonl")[-1]["baselines"]["bayes_posterior_mixture"], abs=1e-5)
    out = tmp_path / "pred.safetensors"
    res = cli("predict", "--run", str(run), "--data", str(data), "--out", str(out))
    assert res.returncode == 0, res.stderr
    pred = load_file(out)["prediction"]
    model, model_cfg = load_run_model(run)
    batch, _ = load_task_batch(data)
    expected = model.predict_positions(batch.tokens, make_task(model_cfg).readout)
    assert pred.shape == (25, 6) and torch.allclose(pred, expected, atol=1e-6)
    printed = float(re.search(r"MSE over all read-out positions: ([0-9.]+)", res.stdout).group(1))
    assert printed == pytest.approx(((expected - batch.target) ** 2).mean().item(), abs=1e-5)
    # A selection data file does not fit a raw model: one line, exit 2, nothing written.
    sel = tmp_path / "sel.safetensors"
    assert cli("data", "--sequences", "4", "--out", str(sel)).returncode == 0
    res = cli("predict", "--run", str(run), "--data", str(sel), "--out", str(tmp_path / "p2.safetensors"))
    assert res.returncode == 2 and res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "p2.safetensors").exists()
