"""Command-line friction and bad input (issue 11): presets in every help, --resume with its own
config, predict from a bare tokens tensor, the run's device, the held-out export, memory
estimates before allocating, and non-finite data refused. In-process (``selectlens.cli.main``)
on one tiny run."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from selectlens.cli import main
from selectlens.config import load_config, presets

TINY = ["data.train_samp_per_class=120", "training.batch_size=40", "training.epochs=2", "eval.temperature_sequences=60",
        "model.n_embd=8", "model.n_layer=1"]
SETS = [a for o in TINY for a in ("--set", o)]
ROOT = Path(__file__).resolve().parents[1]


def _main(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("h") / "run"
    assert main(["train", "--out", str(run), "--quiet", *SETS]) == 0
    return run


@pytest.mark.parametrize("command", ["data", "train", "run", "import", "bench train", "bench datagen"])
def test_every_config_help_lists_every_preset(command, capsys):
    """Presets come from one place, the shipped configs folder (classification_cpu included)."""
    assert presets() == sorted(p.stem for p in (ROOT / "configs").glob("*.yaml"))
    assert "classification_cpu" in presets()
    code, out, _ = _main(capsys, *command.split(), "--help")
    text = " ".join(out.split())
    assert code == 0 and all(name in text for name in presets()), [p for p in presets() if p not in text]


def test_resume_accepts_its_own_config_and_names_differing_keys(run, capsys):
    code, out, err = _main(capsys, "train", "--resume", "--out", run, "--quiet", *SETS)
    assert code == 0 and "nothing left to train" in out, err
    code, _, err = _main(capsys, "train", "--resume", "--out", run, *SETS, "--set", "model.n_embd=16", "--seed", "4")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "model.n_embd" in err and "seed" in err and "data.N" not in err
    code, _, err = _main(capsys, "train", "--resume")
    assert code == 2 and "--out" in err


def test_predict_needs_only_tokens_and_prints_the_loss(run, tmp_path, capsys):
    from selectlens.rundir import load_run_model
    from selectlens.tasks import make_generator, make_task

    cfg = load_config("default", TINY)
    batch = make_task(cfg).sample(30, make_generator(9))
    model, _ = load_run_model(run)
    expected = model.predict_in_chunks(batch.tokens)
    bare = tmp_path / "bare.safetensors"
    save_file({"tokens": batch.tokens.contiguous()}, bare)  # no config metadata, no ground truth
    code, out, err = _main(capsys, "predict", "--run", run, "--data", bare, "--out", tmp_path / "p.safetensors")
    assert code == 0, err
    assert torch.allclose(load_file(tmp_path / "p.safetensors")["prediction"], expected, atol=1e-6)
    assert "MSE" not in out
    with_target = tmp_path / "t.safetensors"
    save_file({"tokens": batch.tokens.contiguous(), "target": batch.target.contiguous()}, with_target)
    code, out, err = _main(capsys, "predict", "--run", run, "--data", with_target, "--out", tmp_path / "q.safetensors")
    mse = np.mean((expected.double().numpy() - batch.target.double().numpy()) ** 2)
    assert code == 0 and float(re.search(r"MSE against 'target': ([0-9.]+)", out).group(1)) == pytest.approx(mse, abs=1e-5)
    bad = {"wide": {"tokens": torch.zeros(2, 21, 5)}, "long": {"tokens": torch.zeros(2, 40, 3)},
           "flat": {"tokens": torch.zeros(2, 3)}, "none": {"x": torch.zeros(2)},
           "target": {"tokens": batch.tokens[:2].contiguous(), "target": torch.zeros(3)}}
    for name, tensors in bad.items():
        save_file(tensors, tmp_path / f"{name}.safetensors")
        code, _, err = _main(capsys, "predict", "--run", run, "--data", tmp_path / f"{name}.safetensors",
                             "--out", tmp_path / f"o_{name}.safetensors")
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, (name, err)
        assert not (tmp_path / f"o_{name}.safetensors").exists()


def test_predict_and_interpret_use_the_runs_device_else_cpu_with_a_notice(run, tmp_path, capsys):
    moved = tmp_path / "elsewhere"
    import shutil

    shutil.copytree(run, moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["device"] = "cuda:7"  # a device this machine lacks
    (moved / "config.json").write_text(json.dumps(cfg))
    data = tmp_path / "d.safetensors"
    save_file({"tokens": torch.zeros(3, 21, 3)}, data)
    code, _, err = _main(capsys, "predict", "--run", moved, "--data", data, "--out", tmp_path / "p.safetensors")
    assert code == 0 and err.strip() == "notice: the run's device cuda:7 is not available here; using cpu"
    code, _, err = _main(capsys, "predict", "--run", moved, "--data", data, "--out", tmp_path / "p2.safetensors",
                         "--device", "cuda:7")
    assert code == 2 and "cuda:7" in err  # an explicit device must exist
    code, _, err = _main(capsys, "interpret", "--run", moved, "--sequences", "10" + "0" * 9)
    assert code == 2 and "notice: the run's device cuda:7" in err and "needs about" in err


def test_run_takes_seed_and_device(capsys, tmp_path):
    code, _, err = _main(capsys, "run", "--out", tmp_path / "r", "--device", "nonsense", *SETS)
    assert code == 2 and "nonsense" in err and not (tmp_path / "r").exists()
    code, _, err = _main(capsys, "run", "--out", tmp_path / "r", "--seed", "-1")
    assert code == 2 and "--seed" in err


def test_heldout_export_gives_evals_model_mse(run, tmp_path, capsys):
    from selectlens.rundir import load_run_model

    out = tmp_path / "heldout.safetensors"
    code, _, err = _main(capsys, "data", "--heldout", "--run", run, "--sequences", 300, "--out", out)
    assert code == 0, err
    code, printed, err = _main(capsys, "eval", "--run", run, "--sequences", 300, "--json")
    assert code == 0, err
    reported = json.loads(printed)["predictors"]["model"]["mse"]
    tensors = load_file(out)
    model, _ = load_run_model(run)
    pred = model.predict_in_chunks(tensors["tokens"]).double().numpy()
    assert tensors["tokens"].shape[0] == 300
    assert np.mean((pred - tensors["target"].double().numpy()) ** 2) == pytest.approx(reported, rel=1e-6)
    code, _, err = _main(capsys, "data", "--heldout", "--out", tmp_path / "x.safetensors")
    assert code == 2 and "--run" in err


def test_huge_requests_are_refused_quickly_with_the_estimate(run, tmp_path, capsys):
    for argv in (["data", "--set", "data.N=100000000", "--out", tmp_path / "a.safetensors"],
                 ["train", "--set", "data.N=100000000", "--out", tmp_path / "r"],
                 ["eval", "--run", run, "--sequences", 10**10]):
        code, _, err = _main(capsys, *argv)
        assert code == 2 and re.match(r"error: .* needs about [0-9.]+ [KMGTP]?B of (memory|disk), [0-9.]+ [KMGTP]?B", err), err
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a.safetensors").exists() and not (tmp_path / "r").exists()


def test_data_is_generated_in_chunks_from_one_generator(tmp_path):
    """Chunked generation streams the same sequences as drawing chunk by chunk from one generator;
    up to one chunk it is the single draw of before."""
    from selectlens.tasks import make_generator, make_task
    from selectlens.tasks.io import load_task_batch, write_data_file

    cfg = load_config("default", TINY)
    write_data_file(tmp_path / "c.safetensors", cfg, 20, chunk=7)
    batch, _ = load_task_batch(tmp_path / "c.safetensors")
    task, gen = make_task(cfg), make_generator(cfg.seed)
    parts = [task.sample(n, gen) for n in (7, 7, 6)]
    for name, t in batch.as_dict().items():
        assert torch.equal(t, torch.cat([getattr(p, name) for p in parts])), name
    write_data_file(tmp_path / "one.safetensors", cfg, 20)
    whole = task.sample(20, make_generator(cfg.seed))
    assert torch.equal(load_task_batch(tmp_path / "one.safetensors")[0].tokens, whole.tokens)


@pytest.mark.parametrize("setting", ["data.data_alphas=[1e308]", "data.noise_scale=1e30", "data.candidate_alphas=[1e300]"])
def test_values_that_overflow_the_dtype_are_refused(setting, tmp_path, capsys):
    out = tmp_path / "d.safetensors"
    code, _, err = _main(capsys, "data", "--set", setting, "--out", out)
    assert code == 2 and "too large for dtype float32" in err and not out.exists()


def test_non_finite_generated_data_is_never_written(capsys):
    from selectlens.config import ConfigError
    from selectlens.tasks import make_generator, make_task
    from selectlens.tasks.io import check_finite_batch

    cfg = load_config("default", TINY)
    batch = make_task(cfg).sample(4, make_generator(0))
    check_finite_batch(batch, cfg)
    batch.y_train[2, 3] = float("inf")
    with pytest.raises(ConfigError, match="'y_train' holds NaN or inf"):
        check_finite_batch(batch, cfg)


def test_non_finite_eval_numbers_are_flagged():
    from selectlens.evaluate.runner import non_finite_keys

    assert non_finite_keys({"a": 1.0, "b": {"c": float("nan"), "d": [0.0, float("inf")]}}) == ["b.c", "b.d.1"]


@pytest.mark.parametrize("argv, code", [(["--version"], 0), (["train", "--config", "no_such_preset"], 2)])
def test_python_dash_m_exits_with_the_commands_status(argv, code, tmp_path):
    """``python -m selectlens`` (where the script is not on the PATH) exits with the command's status, so a
    failed command fails a shell pipeline or a CI step."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "selectlens", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == code, out.stderr
    assert "Traceback" not in out.stderr
