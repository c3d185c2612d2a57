"""One writer per run directory, with real processes: while a run trains, every other command that
would write into it (train new / --force / --resume, eval, interpret, run, data --heldout into it) is
refused at once with one line naming the directory and the trainer's pid; readers (predict) work;
the trainer's files stay its own; SIGKILL releases the lock; a sweep trial writes under it too."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from selectlens.rundir import read_jsonl, run_dir_lock, run_lock_path
from conftest import ROOT

pytestmark = pytest.mark.slow

EPOCHS = 30
CFG = ["data.train_samp_per_class=100", "training.batch_size=40", f"training.epochs={EPOCHS}",
       "training.save_every_epochs=1", "eval.temperature_sequences=50", "eval.sequences=200",
       "model.n_embd=8", "model.n_layer=1", "training.lr=0.003"]
SETS = [a for o in CFG for a in ("--set", o)]


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1", **extra)


def _start(*args: str, delay: float = 0.0) -> subprocess.Popen:
    """``selectlens ARGS`` in the background; ``delay`` slows each checkpoint file write (test hook)."""
    env = _env(SELECTLENS_FAULT_DELAY_S=str(delay)) if delay else _env()
    return subprocess.Popen([sys.executable, "-m", "selectlens.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_a_second_writer_is_refused_while_a_run_trains(tmp_path):
    run = tmp_path / "R"
    first = _start("train", "--out", str(run), "--quiet", *SETS, delay=0.4)
    try:
        _wait_for(lambda: (run / "model.safetensors").exists(), first)
        others = {
            "train --force --seed 7": _start("train", "--out", str(run), "--force", "--seed", "7", "--quiet", *SETS),
            "train (new)": _start("train", "--out", str(run), "--quiet", *SETS),
            "train --resume": _start("train", "--out", str(run), "--resume", "--quiet"),
            "eval": _start("eval", "--run", str(run), "--sequences", "100"),
            "interpret": _start("interpret", "--run", str(run), "--sequences", "16", "--quiet"),
            "run --force": _start("run", "--out", str(run), "--force", "--quiet", *SETS),
            "data --heldout into the run": _start("data", "--heldout", "--run", str(run), "--sequences", "10",
                                                  "--out", str(run / "h.safetensors")),
        }
        data = tmp_path / "d.safetensors"
        made = subprocess.run([sys.executable, "-m", "selectlens.cli", "data", "--set", "data.train_samp_per_class=5",
                               "--out", str(data)], cwd=ROOT, env=_env(), capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        reader = _start("predict", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "p.safetensors"))
        for what, proc in others.items():
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 2, (what, err)
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), (what, err)
            assert str(run) in lines[0] and f"(pid {first.pid})" in lines[0], (what, err)
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0 and "wrote 5 predictions" in out, err
        # each refusal named the trainer's pid: it was refused while the trainer held the run
        out, err = first.communicate(timeout=300)
    finally:
        first.kill()
    assert first.returncode == 0 and out.startswith(f"finished: epoch {EPOCHS}"), err
    # the first run's files are its own: its config, every epoch once and in order, its last weights
    assert json.loads((run / "config.json").read_text())["seed"] == 0
    assert [m["epoch"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, EPOCHS + 1))
    from safetensors import safe_open

    with safe_open(run / "model.safetensors", "pt") as f:
        assert f.metadata()["epoch"] == str(EPOCHS)
    assert not (run / "h.safetensors").exists() and not (run / "eval.json").exists()
    assert not (run / "report").exists()
    assert run_lock_path(run).read_text().strip() == str(first.pid)  # the file stays; the lock went with the process
    with run_dir_lock(run):
        pass


def test_sigkill_releases_the_lock_and_the_run_resumes(tmp_path, capsys):
    from selectlens.cli import main

    run = tmp_path / "R"
    proc = _start("train", "--out", str(run), "--quiet", *SETS, delay=0.25)
    try:
        _wait_for(lambda: (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()), proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert main(["train", "--out", str(run), "--resume", "--quiet"]) == 0
    assert f"finished: epoch {EPOCHS}" in capsys.readouterr().out
    assert [m["epoch"] for m in read_jsonl(run / "metrics.jsonl")] == list(range(1, EPOCHS + 1))


def _holder(path) -> subprocess.Popen:
    """A process that holds ``path``'s run lock until killed."""
    code = (f"import sys, time\nfrom selectlens.rundir import run_dir_lock\nwith run_dir_lock({str(path)!r}):\n"
            "    print('locked', flush=True)\n    time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_a_sweep_trial_writes_under_the_run_lock(tmp_path):
    from selectlens.config import load_config
    from selectlens.sweeps.trial import run_trial, trial_dir

    cfg = load_config("default", CFG[:2] + ["training.epochs=2"] + CFG[3:]).to_dict()
    holder = _holder(trial_dir(tmp_path, "t0"))
    try:
        record = run_trial(tmp_path, "t0", cfg, ["train"], 1)
        assert record["status"] == "failed" and "being written by another process" in record["error"]
        assert f"(pid {holder.pid})" in record["error"] and not trial_dir(tmp_path, "t0").exists()
    finally:
        holder.kill()
        holder.wait()
    record = run_trial(tmp_path, "t0", cfg, ["train"], 1)
    assert record["status"] == "done" and record["error"] is None
    assert [m["epoch"] for m in read_jsonl(trial_dir(tmp_path, "t0") / "metrics.jsonl")] == [1, 2]


def test_the_lock_is_reentrant_in_a_process_and_its_children(tmp_path):
    run = tmp_path / "R"
    with run_dir_lock(run):
        with run_dir_lock(run):  # `run` → eval inside the same process
            pass
        child = subprocess.run([sys.executable, "-c", f"from selectlens.rundir import run_dir_lock\n"
                                f"with run_dir_lock({str(run)!r}): print('ok')"],
                               cwd=ROOT, env=dict(os.environ), capture_output=True, text=True)
        assert child.stdout.strip() == "ok", child.stderr  # a torchrun rank of the holder
        stranger = subprocess.run([sys.executable, "-c", f"from selectlens.rundir import run_dir_lock\n"
                                   f"with run_dir_lock({str(run)!r}): print('ok')"],
                                  cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "SELECTLENS_RUN_LOCKS"},
                                  capture_output=True, text=True)
        assert stranger.returncode != 0 and f"(pid {os.getpid()})" in stranger.stderr
    assert "SELECTLENS_RUN_LOCKS" not in os.environ
