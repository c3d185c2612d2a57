"""A training run killed (SIGKILL) at every named write boundary, then resumed, ends bitwise equal
to an uninterrupted run: weights (run level and checkpoints, byte for byte), metrics.jsonl, and
the epochs of timing.jsonl; the run directory loads at every kill.

The kills are deterministic: ``SELECTLENS_FAULT_POINT=name[:count]`` makes the process SIGKILL
itself the count-th time it reaches the point (:data:`selectlens.rundir.FAULT_POINTS`). Runs
execute in children of a forkserver that has torch imported already, so each case costs a tiny
training run, not a Python start-up.
"""

import multiprocessing as mp
import os
import signal

import pytest
from safetensors.torch import load_file

from selectlens.config import load_config
from selectlens.fileio import FAULT_ENV
from selectlens.rundir import FAULT_POINTS, checkpoint_dirs, read_jsonl, read_run_config

CFG = ["data.train_samp_per_class=100", "training.batch_size=40", "training.epochs=3", "training.save_every_epochs=1",
       "eval.temperature_sequences=50", "model.n_embd=8", "model.n_layer=1", "training.lr=0.003"]
EPOCHS = 3

# (point, which time it is reached): mostly the last epoch, where a stale file is never rewritten
# by later epochs, so "nothing left to train" must repair it. The resume.* points first need a run
# killed where that resume has something to repair.
CASES = {
    "run_dir.before_rename": (1, None),
    "metrics.mid_write": (3, None),
    "metrics.written": (3, None),
    "timing.mid_write": (2, None),
    "timing.written": (3, None),
    "checkpoint.begin": (3, None),
    "checkpoint.model.mid_write": (3, None),
    "checkpoint.state.mid_write": (2, None),
    "checkpoint.before_rename": (3, None),
    "checkpoint.renamed": (3, None),
    "run_model.mid_write": (3, None),
    "run_model.before_rename": (3, None),
    "checkpoint.before_prune": (3, None),
    "checkpoint.mid_prune": (1, None),
    "resume.run_model.before_rename": (1, "checkpoint.renamed:3"),
    "resume.metrics.before_rename": (1, "metrics.written:3"),
    "resume.timing.before_rename": (1, "timing.written:3"),
}


def _train(run: str, resume: bool, fault: str | None) -> None:
    """Child process: train (or resume) the tiny run; with ``fault``, it SIGKILLs itself there."""
    import torch

    from selectlens.train import train

    torch.set_num_threads(1)
    if fault:
        os.environ[FAULT_ENV] = fault
    train(load_config("default", CFG), run, resume=resume, progress=False)


@pytest.fixture(scope="module")
def ctx():
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["selectlens.train", "selectlens.config", "torch"])
    return context


def _run(ctx, run, *, resume=False, fault=None) -> int:
    p = ctx.Process(target=_train, args=(str(run), resume, fault))
    p.start()
    p.join(120)
    return p.exitcode


@pytest.fixture(scope="module")
def reference(ctx, tmp_path_factory):
    run = tmp_path_factory.mktemp("ref") / "run"
    assert _run(ctx, run) == 0
    return run


def test_every_fault_point_has_a_case():
    assert set(CASES) == set(FAULT_POINTS)


def _files(run):
    """What must be identical to the reference: bytes of every weights file, metrics, timing epochs."""
    out = {"model.safetensors": (run / "model.safetensors").read_bytes(),
           "metrics.jsonl": (run / "metrics.jsonl").read_text(),
           "timing epochs": [r["epoch"] for r in read_jsonl(run / "timing.jsonl")],
           "checkpoints": [e for e, _ in checkpoint_dirs(run)]}
    for epoch, path in checkpoint_dirs(run):
        out[f"checkpoint {epoch}"] = (path / "model.safetensors").read_bytes()
    return out


def _assert_loadable(run):
    if not (run / "config.json").exists():
        return
    assert read_run_config(run).training.epochs == EPOCHS
    for _, path in checkpoint_dirs(run):
        load_file(path / "model.safetensors")
    if (run / "model.safetensors").exists():
        load_file(run / "model.safetensors")


@pytest.mark.parametrize("point", FAULT_POINTS)
def test_kill_at_fault_point_then_resume_is_bitwise_identical(point, ctx, reference, tmp_path):
    count, before = CASES[point]
    run = tmp_path / "run"
    if before:  # a first kill that leaves the resume something to repair
        assert _run(ctx, run, fault=before) == -signal.SIGKILL
    code = _run(ctx, run, resume=before is not None, fault=f"{point}:{count}")
    assert code == -signal.SIGKILL, f"{point}:{count} was never reached (exit {code})"
    _assert_loadable(run)
    fresh = not (run / "config.json").exists()  # killed before the run directory existed: start again
    assert _run(ctx, run, resume=not fresh) == 0
    assert _files(run) == _files(reference)
    assert not list(run.glob(".*.tmp")) and not list((run / "checkpoints").glob(".epoch_*"))


def test_eval_made_from_stale_weights_is_set_aside_on_resume(ctx, reference, tmp_path):
    """Killed between the last checkpoint's rename and the run-level write, then evaluated: eval.json
    describes epoch-2 weights. The resume (nothing left to train) restores epoch 3 at the run level
    and moves the stale eval outputs to stale_before_epoch_000003/; a current eval is kept."""
    from selectlens.evaluate import evaluate_model, write_eval
    from selectlens.rundir import load_run_model, weights_sha256
    from selectlens.train import train

    run = tmp_path / "run"
    assert _run(ctx, run, fault="checkpoint.renamed:3") == -signal.SIGKILL
    stale_sha = weights_sha256(run)
    assert (run / "model.safetensors").read_bytes() == (checkpoint_dirs(run)[-2][1] / "model.safetensors").read_bytes()

    def evaluate():
        model, cfg = load_run_model(run)
        write_eval(run, evaluate_model(model, cfg, sequences=50), read_jsonl(run / "metrics.jsonl"))

    evaluate()
    res = train(load_config("default", CFG), run, resume=True, progress=False)
    assert res.last == {} and (run / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    moved = run / "stale_before_epoch_000003"
    assert sorted(p.name for p in res.set_aside) == ["eval.json", "eval.md", "training_curves.png"]
    assert not (run / "eval.json").exists()
    import json

    assert json.loads((moved / "eval.json").read_text())["model_sha256"] == stale_sha != weights_sha256(run)
    evaluate()
    assert train(load_config("default", CFG), run, resume=True, progress=False).set_aside == []
    assert json.loads((run / "eval.json").read_text())["model_sha256"] == weights_sha256(run)
