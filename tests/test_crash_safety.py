"""SIGKILL a training run at random moments (some inside checkpoint writes); every time the run
directory must still load, --resume must finish it, and the final weights must equal an
uninterrupted run's bit for bit."""

import os
import random
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from selectlens.rundir import checkpoint_dirs, read_jsonl, read_run_config

CFG = ["data.train_samp_per_class=200", "training.batch_size=50", "training.epochs=6", "training.save_every_epochs=1",
       "eval.temperature_sequences=100", "model.n_embd=16", "model.n_layer=1", "training.lr=0.003"]
TRIALS = 24


def _args(run, *extra):
    return [sys.executable, "-m", "selectlens.cli", "train", "--out", str(run), "--quiet", *extra]


def _settings():
    return [a for o in CFG for a in ("--set", o)]


def _start(run, env):
    return subprocess.Popen(_args(run, *_settings()), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for_run(run, proc):
    """Until the run directory (with its config) exists: the run exists from here on."""
    deadline = time.monotonic() + 60
    while not (run / "config.json").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    ref = tmp_path / "reference"
    proc = _start(ref, env)
    _wait_for_run(ref, proc)
    t0 = time.monotonic()
    assert proc.wait() == 0, proc.stderr.read().decode()
    window = time.monotonic() - t0  # how long a run lives once its directory exists: kills land inside it
    ref_weights = load_file(ref / "model.safetensors")
    ref_metrics = (ref / "metrics.jsonl").read_text()

    rng = random.Random(1234)
    survived = during_write = 0
    for trial in range(TRIALS):
        run = tmp_path / f"trial{trial}"
        in_write = trial % 3 == 0
        trial_env = dict(env, SELECTLENS_FAULT_DELAY_S="0.3") if in_write else env
        proc = _start(run, trial_env)
        _wait_for_run(run, proc)
        deadline = time.monotonic() + 60
        if in_write:  # wait for a checkpoint write to be under way, then kill inside it
            while not list((run / "checkpoints").glob(".epoch_*")) if (run / "checkpoints").exists() else True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.25))
        else:
            time.sleep(rng.uniform(0.0, 0.7 * window))
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if in_write and killed and list((run / "checkpoints").glob(".epoch_*")):
            during_write += 1
        # the run directory still loads
        cfg = read_run_config(run)
        assert cfg.training.epochs == 6
        for epoch, path in checkpoint_dirs(run):
            assert torch.load(path / "state.pt", weights_only=True)["epoch"] == epoch
            load_file(path / "model.safetensors")
        read_jsonl(run / "metrics.jsonl")
        # --resume continues it to the end
        res = subprocess.run(_args(run, "--resume"), env=env, capture_output=True, text=True)
        assert res.returncode == 0, f"trial {trial}: {res.stderr}"
        got = load_file(run / "model.safetensors")
        assert all(torch.equal(got[k], ref_weights[k]) for k in ref_weights), f"trial {trial}: weights differ"
        assert (run / "metrics.jsonl").read_text() == ref_metrics, f"trial {trial}: metrics differ"
        survived += 1 if killed else 0
    print(f"\ncrash safety: {survived} kills survived of {TRIALS} trials, {during_write} during a checkpoint write")
    assert survived >= 20 and during_write >= 5
