"""One sweep trial, as it runs inside a Ray worker: train → eval (→ interpret) into ``DIR/trials/<name>``.

The trial directory is an ordinary run directory made by the library's own
``train``/``evaluate_model``/``interpret_run``, so a trial's ``metrics.jsonl``
equals a standalone ``selectlens train`` with the same config and seed (CPU).

Sweep bookkeeping lives beside it, never inside it (``--force`` replaces a run
directory wholesale): ``DIR/state/<name>.json`` holds the trial's status
(``running`` / ``done`` / ``failed``), the stages finished and the error line,
written atomically; ``DIR/state/<name>.lock`` is held (``flock``) while a
worker runs the trial, so a worker left over from a killed sweep and the
resumed one never write the same run directory at once. The trial directory itself is written
under :func:`selectlens.rundir.run_dir_lock`, as every ``selectlens`` command that writes a run does.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

from selectlens.config import Config, config_from_dict
from selectlens.errors import SelectLensError
from selectlens.fileio import atomic_write
from selectlens import rundir


def trial_dir(sweep_dir: Path, name: str) -> Path:
    return Path(sweep_dir) / "trials" / name


def status_path(sweep_dir: Path, name: str) -> Path:
    return Path(sweep_dir) / "state" / f"{name}.json"


def read_status(sweep_dir: Path, name: str) -> dict[str, Any]:
    """The trial's status record; ``{"status": "pending"}`` when it never started (or the file is unreadable)."""
    path = status_path(sweep_dir, name)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"status": "pending", "stages_done": []}
    return record if isinstance(record, dict) else {"status": "pending", "stages_done": []}


def write_status(sweep_dir: Path, name: str, record: dict[str, Any]) -> None:
    atomic_write(status_path(sweep_dir, name), json.dumps(record, indent=1).encode())


@contextlib.contextmanager
def trial_lock(sweep_dir: Path, name: str) -> Iterator[None]:
    """Exclusive lock on the trial (blocks while a stale worker of a killed sweep still holds it)."""
    path = Path(sweep_dir) / "state" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class TrialStopped(Exception):
    """Raised from a trial's epoch report when its scheduler has stopped it (the run keeps what it wrote)."""


def run_trial(sweep_dir: str | Path, name: str, config: dict[str, Any], stages: list[str], threads: int,
              on_epoch: Callable[[dict[str, Any]], None] | None = None, max_minutes: float | None = None) -> dict[str, Any]:
    """Run (or continue) one trial; returns its final status record. Errors become ``status: failed``.
    ``on_epoch`` receives each training epoch's metrics record (a scheduler's report)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    sweep_dir = Path(sweep_dir)
    cfg = config_from_dict(config, stored=True)
    with trial_lock(sweep_dir, name):
        record = read_status(sweep_dir, name)
        if record.get("status") in FINAL:
            return record
        done = [s for s in record.get("stages_done", []) if s in stages]
        record = {"status": "running", "stages_done": done, "error": None}
        write_status(sweep_dir, name, record)
        try:
            with rundir.run_dir_lock(trial_dir(sweep_dir, name)):  # refused while e.g. `selectlens eval` writes it
                if "interpret" in stages and "interpret" not in done:  # as `selectlens interpret`, before any work
                    rundir.check_interpret_memory(cfg, INTERPRET_SEQUENCES, "cpu", "lower the sweep's model or data size")
                for stage in stages:
                    if stage not in done:
                        if stage == "train":
                            _train(trial_dir(sweep_dir, name), cfg, on_epoch, max_minutes)
                        else:
                            _STAGES[stage](trial_dir(sweep_dir, name), cfg)
                        done.append(stage)
                        write_status(sweep_dir, name, record)
        except TrialStopped:
            record.update(status="stopped", error=None)
        except SelectLensError as e:
            record.update(status="failed", error=str(e))
        except Exception as e:  # a trial's crash is reported as its error line; the sweep goes on
            first = (str(e).splitlines() or [""])[0]
            record.update(status="failed", error=f"{e.__class__.__name__}: {first}"[:500])
        else:
            record["status"] = "done"
        write_status(sweep_dir, name, record)
        return record


def _train(run: Path, cfg: Config, on_epoch: Callable[[dict[str, Any]], None] | None = None,
           max_minutes: float | None = None) -> None:
    from selectlens.train import train
    from selectlens.train.sinks import MetricSinks

    if (run / "config.json").exists() and rundir.checkpoint_dirs(run):
        saved = rundir.read_run_config(run)
        if saved.to_dict() != cfg.to_dict():
            raise rundir.RunDirError(f"{run} holds a run with another config; move it away to rerun this trial")
        train(saved, run, resume=True, progress=False, sinks=MetricSinks.from_config(saved, run, on_epoch),
              max_minutes=max_minutes)
    else:  # never started, or killed before its first checkpoint: start over
        train(cfg, run, force=True, progress=False, sinks=_sinks_after_start(cfg, run, on_epoch), max_minutes=max_minutes)


def _sinks_after_start(cfg: Config, run: Path, on_epoch):
    """Sinks for a new run (the run directory is made by ``train``, so wandb's id file comes after it)."""
    from selectlens.train.sinks import MetricSinks

    return MetricSinks(callback=on_epoch) if not cfg.wandb.project else None


def _eval(run: Path, cfg: Config) -> None:
    from selectlens.evaluate import evaluate_model, write_eval
    from selectlens.rundir import load_run_model, read_jsonl

    model, saved = load_run_model(run)
    write_eval(run, evaluate_model(model, saved), read_jsonl(run / "metrics.jsonl"))


INTERPRET_SEQUENCES = 512  # interpret_run's default
FINAL = ("done", "stopped")  # a trial in either state is not run again (stopped: an early-stopping scheduler ended it)


def _interpret(run: Path, cfg: Config) -> None:
    from selectlens.interpret.report import interpret_run

    interpret_run(run, sequences=INTERPRET_SEQUENCES, progress=False)


_STAGES = {"train": _train, "eval": _eval, "interpret": _interpret}
