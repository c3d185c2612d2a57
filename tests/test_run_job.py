"""`selectlens run` and sweep trials interpret as `selectlens interpret` does: on the run's device,
after the same memory check — made before training, so an interpretation that cannot fit costs nothing."""

from pathlib import Path

import pytest

from conftest import TINY_RUN
from selectlens.config import load_config
from selectlens.tasks import memory

SETS = [a for o in TINY_RUN for a in ("--set", o)]


@pytest.fixture
def room_for_all_but_interpret(monkeypatch):
    """Memory for training and eval of the tiny config, not for interpreting 512 sequences."""
    cfg = load_config("default", TINY_RUN)
    enough = max(memory.train_bytes(cfg), memory.eval_bytes(cfg, cfg.eval.sequences))
    need = memory.interpret_bytes(cfg, 512)
    assert enough < need
    monkeypatch.setattr(memory, "available_bytes", lambda device="cpu": (enough + need) // 2)
    return cfg


def test_run_checks_interpret_memory_before_training(room_for_all_but_interpret, tmp_path, capsys):
    from selectlens.cli import main

    assert main(["run", "--out", str(tmp_path / "r"), "--quiet", *SETS]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: interpreting 512 sequences needs about") and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_sweep_trial_checks_interpret_memory_before_training(room_for_all_but_interpret, tmp_path):
    from selectlens.sweeps.trial import run_trial, trial_dir

    record = run_trial(tmp_path, "t", room_for_all_but_interpret.to_dict(), ["train", "eval", "interpret"], 1)
    assert record["status"] == "failed" and record["error"].startswith("interpreting 512 sequences needs about")
    assert record["stages_done"] == [] and not (trial_dir(tmp_path, "t") / "metrics.jsonl").exists()


def test_run_interprets_on_the_runs_device(monkeypatch, tmp_path, capsys):
    import selectlens.interpret.report as report
    from selectlens.cli import main

    seen = {}

    def fake_interpret_run(run_dir, out_dir=None, **kwargs):
        seen.update(kwargs, run_dir=Path(run_dir))
        return {"html": Path(run_dir) / "report" / "report.html"}

    monkeypatch.setattr(report, "interpret_run", fake_interpret_run)
    assert main(["run", "--out", str(tmp_path / "r"), "--device", "cpu", "--quiet", *SETS]) == 0, capsys.readouterr().err
    assert seen["device"] == "cpu" and seen["sequences"] == 512 and seen["run_dir"] == tmp_path / "r"
