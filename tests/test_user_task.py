"""A user's own task family (examples/my_task.py) loads by import path, trains, evaluates and reports;
a class that misses a piece of the protocol is refused with one line."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from selectlens.config import ConfigError, load_config
from selectlens.tasks import make_generator, make_task

EXAMPLES = ROOT / "examples"
TINY = ["data.train_samp_per_class=300", "training.epochs=2", "training.batch_size=64", "eval.sequences=400",
        "model.n_embd=32", "model.n_layer=2", "data.N=8"]


@pytest.fixture
def examples_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")]))


def test_user_task_noise_is_laplace(examples_on_path):
    cfg = load_config("mixed_noise_cpu", ["data.task=my_task:LaplaceNoiseTask", "data.noise_levels=[0.5]"])
    task = make_task(cfg)
    batch = task.sample(20000, make_generator(0))
    resid = (batch.y - (batch.x @ batch.w.unsqueeze(-1)).squeeze(-1) / cfg.data.d_d ** 0.5).flatten().double() / 0.5
    var = resid.var()
    kurtosis = ((resid - resid.mean()) ** 4).mean() / var**2
    assert abs(float(var) - 1.0) < 0.02  # unit variance, like the Gaussian task
    assert abs(float(kurtosis) - 6.0) < 0.3  # Laplace: kurtosis 6 (a Gaussian has 3)
    clean = np.einsum("bnd,bd->bn", batch.x.double().numpy(), batch.w.double().numpy()) / cfg.data.d_d ** 0.5
    np.testing.assert_allclose(task.conditional_mean(batch).double().numpy(), clean, rtol=1e-5, atol=1e-6)


def test_user_task_trains_evaluates_and_reports(examples_on_path, tmp_path):
    run = tmp_path / "laplace"
    args = ["run", "--config", "mixed_noise_cpu", "--set", "data.task=my_task:LaplaceNoiseTask", "--out", str(run), "--quiet"]
    res = run_cli(*args, *[a for o in TINY for a in ("--set", o)], cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    ev = json.loads((run / "eval.json").read_text())
    assert ev["family"] == "laplace_noise_regression"
    assert ev["reference"] == "bayes_posterior_mixture" and "least_squares" in ev["predictors"]
    assert len(ev["positions"]) == 8 and (run / "report" / "report.html").is_file()


def test_incomplete_user_task_is_refused_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "broken_task.py").write_text(
        "from selectlens.tasks.protocol import TaskFamily\n"
        "from selectlens.config import DataConfig\n"
        "class Half(TaskFamily):\n    name = 'half'\n    Data = DataConfig\n    layout = 'selection'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="does not implement the task protocol: missing Batch, sample, readout, groups"):
        load_config("default", ["data.task=broken_task:Half"])
    with pytest.raises(ConfigError, match="cannot import no_such_module"):
        load_config("default", ["data.task=no_such_module:Task"])
