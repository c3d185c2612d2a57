"""Data-parallel training on 2 CPU processes over gloo (real torchrun): per-epoch losses within 1e-4 of a
1-process run with the same global batch, --resume under DDP, a dying rank ends the job with one error
line (no hang), and a batch that cannot be split is refused before any process starts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT
from selectlens.config import load_config
from selectlens.rundir import read_jsonl
from selectlens.train import train

# 1000 sequences: 800 train = 12 full batches of 64 + a last one of 32 (uneven splits are exact too)
TINY = ["data.train_samp_per_class=1000", "training.epochs=3", "training.batch_size=64", "training.save_every_epochs=1",
        "eval.temperature_sequences=200", "model.n_embd=32", "training.lr=0.003", "training.warmup_steps=5"]


def selectlens(*args, **kw):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "selectlens.cli", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, **kw)


def sets(extra=()):
    return [a for o in TINY + list(extra) for a in ("--set", o)]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    import torch

    run = tmp_path_factory.mktemp("ddp") / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config("default", TINY), run, progress=False)
    finally:
        torch.set_num_threads(threads)
    return read_jsonl(run / "metrics.jsonl")


def _close(a, b, tol):
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b]
    for x, y in zip(a, b):
        assert x["sequences"] == y["sequences"] and x["step"] == y["step"]
        assert abs(x["train_loss"] - y["train_loss"]) <= tol, (x["epoch"], x["train_loss"], y["train_loss"])
        assert abs(x["test_loss"] - y["test_loss"]) <= tol, (x["epoch"], x["test_loss"], y["test_loss"])
        assert x["baselines"] == y["baselines"]  # the same data on every rank count


def test_two_gloo_ranks_match_one_process_and_resume(one_process, tmp_path):
    ddp = tmp_path / "ddp"
    res = selectlens("train", "--nproc", "2", "--out", str(ddp), "--quiet", *sets())
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("finished: epoch 3") == 1  # rank 0 alone reports
    two = read_jsonl(ddp / "metrics.jsonl")
    _close(two, one_process, 1e-4)
    assert [t["processes"] for t in read_jsonl(ddp / "timing.jsonl")] == [2, 2, 2]  # what keep_run names as --nproc
    # interrupted after its first epoch (time limit), then resumed on 2 ranks: same as uninterrupted
    part = tmp_path / "part"
    res = selectlens("train", "--nproc", "2", "--out", str(part), "--quiet", "--max-minutes", "1e-6", *sets())
    assert res.returncode == 0, res.stderr
    assert "stopped at the time limit: epoch 1" in res.stdout
    res = selectlens("train", "--nproc", "2", "--out", str(part), "--quiet", "--resume")
    assert res.returncode == 0, res.stderr
    _close(read_jsonl(part / "metrics.jsonl"), two, 1e-6)
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == ["epoch_000002", "epoch_000003"]


RAW_WEIGHTED = ["data.train_samp_per_class=1000", "training.epochs=2", "training.batch_size=64", "model.n_embd=32",
                "model.n_layer=1", "eval.temperature_sequences=200", "training.position_weights=inverse_reference",
                "training.target=conditional_mean"]
RAW_CURRICULUM = RAW_WEIGHTED[:6] + ["training.position_weights=uniform",
                                     "training.curriculum={d_start: 2, d_inc: 1, n_start: 4, n_inc: 5, every: 6}"]


@pytest.mark.parametrize("raw", [RAW_WEIGHTED, RAW_CURRICULUM], ids=["weighted", "curriculum"])
def test_two_gloo_ranks_train_the_raw_losses_like_one_process(tmp_path, raw):
    """Position weights and the conditional-mean target on a raw-data task: each rank computes the same weights,
    and the gradient average over ranks is still the weighted global mean. A curriculum: every rank steps
    through the same points, and rank 0 alone scores the point's and the full-size test splits."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config("mixed_noise_cpu", raw), tmp_path / "one", progress=False)
    finally:
        torch.set_num_threads(threads)
    res = selectlens("train", "--config", "mixed_noise_cpu", "--nproc", "2", "--out", str(tmp_path / "ddp"), "--quiet",
                     *[a for o in raw for a in ("--set", o)])
    assert res.returncode == 0, res.stderr
    one, two = read_jsonl(tmp_path / "one" / "metrics.jsonl"), read_jsonl(tmp_path / "ddp" / "metrics.jsonl")
    _close(two, one, 1e-4)
    if raw is RAW_WEIGHTED:
        assert two[-1]["train_position_weights"] == one[-1]["train_position_weights"]
    else:
        assert [r["curriculum"] for r in two] == [r["curriculum"] for r in one] and one[0]["curriculum"] != one[-1]["curriculum"]
        for x, y in zip(two, one):
            assert abs(x["full_size"]["test_loss"] - y["full_size"]["test_loss"]) <= 1e-4
            assert x["full_size"]["baselines"] == y["full_size"]["baselines"]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _rank_pid(root: int, rank: str) -> int | None:
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            env = []
        if f"RANK={rank}".encode() in env and b"LOCAL_WORLD_SIZE=2" in env:
            return pid
        todo += _children(pid)
    return None


def test_a_dying_rank_takes_the_job_down_with_one_error_line(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "selectlens.cli", "train", "--nproc", "2", "--out", str(run), "--quiet",
           *sets(["training.epochs=200"])]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not read_jsonl(run / "metrics.jsonl") and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        victim = _rank_pid(proc.pid, "1")
        assert victim is not None and proc.poll() is None
        os.kill(victim, signal.SIGKILL)
        out, err = proc.communicate(timeout=90)  # no hang: torchrun stops rank 0 and exits
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: distributed training failed: a rank exited") and "--resume" in last
    assert json.loads((run / "config.json").read_text())["training"]["epochs"] == 200


def test_unsplittable_batch_is_refused_before_launch(tmp_path):
    res = selectlens("train", "--nproc", "4", "--out", str(tmp_path / "r"), *sets(["training.batch_size=3"]))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: training.batch_size 3 (last batch of an epoch: 2) cannot be split over 4 ranks; use a batch of at least 4 sequences"]
    assert not (tmp_path / "r").exists()
