"""Run a sweep on Ray Tune: one Tune trial per SelectLens trial, resumable across driver kills.

Layout of a sweep directory::

    DIR/
      spec.yaml            the validated spec (base made absolute); --resume reads it
      sweep.json           the trial list: name, grid point, seed, resolved config
      state/<name>.json    each trial's status (written atomically by its worker)
      trials/<name>/       each trial's ordinary run directory
      summary.csv/.md      aggregation (rewritten at the end of every invocation)
      .ray/                Ray Tune's own experiment files (not needed to resume)

The sweep's own state is the trial list plus the per-trial status files, each
written atomically, so a SIGKILL at any moment leaves every file old or new.
``--resume`` skips trials whose status is ``done``, reruns failed ones, and
continues unfinished ones from their last checkpoint through the run
directory's ``--resume``; because training is deterministic and resumes
bitwise-equal, the final results equal an uninterrupted sweep's. Under ASHA the
resumed scheduler starts with the rungs the trials' metrics already hold (``asha.py``).

Ray Tune only schedules: it places trials on CPUs/GPUs of a local or remote
Ray cluster, limits concurrency and reports state changes; there is no
scheduler of our own.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


from selectlens.fileio import atomic_write, fsync_dir, probe_writable
from selectlens.sweeps.aggregate import write_summary
from selectlens.sweeps.asha import epoch_report, reference_name, rung_history, seeded_asha
from selectlens.sweeps.spec import SweepSpec, Trial, curriculum_before_grace, spec_yaml
from selectlens.sweeps.store import SweepDirError, read_sweep
from selectlens.sweeps.trial import FINAL, TrialStopped, read_status, run_trial, write_status


@dataclass
class SweepResult:
    sweep_dir: Path
    statuses: dict[str, dict[str, Any]]

    def count(self, status: str) -> int:
        return sum(1 for r in self.statuses.values() if r.get("status") == status)


def create_sweep_dir(out: Path, spec: SweepSpec, trials: list[Trial], *, force: bool = False) -> None:
    """Make ``out`` with ``spec.yaml`` and ``sweep.json``, atomically (built under a temporary name, renamed)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SweepDirError(f"sweep path exists and is not a directory: {out}")
    if out.exists() and any(out.iterdir()) and not force:
        raise SweepDirError(f"sweep directory exists: {out} (use --resume to continue it or --force to replace it)")
    probe_writable(out.parent, SweepDirError)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".new", dir=out.parent))
    atomic_write(tmp / "spec.yaml", spec_yaml(spec).encode())
    atomic_write(tmp / "sweep.json", json.dumps(sweep_record(trials), indent=1).encode())
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.rename(out, old / "sweep")
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
    fsync_dir(out.parent)


def sweep_record(trials: list[Trial]) -> dict[str, Any]:
    return {"trials": [{"name": t.name, "point": t.point, "seed": t.seed, "config": t.config.to_dict()} for t in trials]}


class _DriverLock:
    """One driver per sweep directory (``flock`` on ``DIR/.driver.lock``, released when the process dies)."""

    def __init__(self, out: Path):
        self.fd = os.open(Path(out) / ".driver.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise SweepDirError(f"another sweep is running in {out}") from None

    def release(self) -> None:
        os.close(self.fd)


def run_sweep(
    spec: SweepSpec | None,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    address: str | None = None,
    max_concurrent: int | None = None,
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Run (or, with ``resume``, continue) a sweep into ``out``; returns every trial's status."""
    out = Path(out).resolve()
    if resume:
        saved_spec, trials = read_sweep(out)
        if spec is not None and spec.to_dict() != saved_spec.to_dict():
            raise SweepDirError(f"--resume: the spec differs from {out / 'spec.yaml'}; resume without it or use a new --out")
        spec = saved_spec
    else:
        assert spec is not None
        trials = spec.trials()  # every trial validated before anything is written or started
        create_sweep_dir(out, spec, trials, force=force)
    lock = _DriverLock(out)
    try:
        pending = [t for t in trials if read_status(out, t.name).get("status") not in FINAL]
        stopped = sum(read_status(out, t.name).get("status") == "stopped" for t in trials)
        echo(f"sweep {out}: {len(trials)} trials, {len(trials) - len(pending) - stopped} done, "
             + (f"{stopped} stopped by the scheduler, " if stopped else "") + f"{len(pending)} to run")
        early = curriculum_before_grace(spec, pending)
        if early:
            echo(early)
        if pending:
            history = rung_history(out, {t.name: t.config.to_dict() for t in trials}, spec.asha) if resume and spec.asha else {}
            finished = {t.name: read_status(out, t.name).get("status", "") for t in trials if t.name not in {p.name for p in pending}}
            _run_on_ray(spec, out, pending, {"done": len(trials) - len(pending) - stopped, "stopped": stopped}, address,
                        max_concurrent, echo, history, finished)
    finally:
        lock.release()
    write_summary(out)
    return SweepResult(out, {t.name: read_status(out, t.name) for t in trials})


def _trainable(config: dict[str, Any], sweep_dir: str, configs: dict[str, dict], stages: list[str], threads: int,
               max_minutes: float | None = None) -> None:
    """The Tune function trainable: runs one trial, reports every training epoch (for a scheduler) and its
    final status."""
    import time

    from ray import tune

    name = config["name"]
    started, last = time.monotonic(), {}
    reference = reference_name(configs[name])

    def on_epoch(record: dict[str, Any]) -> None:
        last.update(epoch_report(record, reference, (time.monotonic() - started) / 60))
        tune.report(dict(last))
        if _stop_requested():
            raise TrialStopped()

    record = run_trial(sweep_dir, name, configs[name], stages, threads, on_epoch=on_epoch, max_minutes=max_minutes)
    tune.report({**last, "status": record["status"], "error": record.get("error") or ""})


def _stop_requested() -> bool:
    """Whether Tune has stopped this trial (its scheduler decided so); the function keeps running otherwise."""
    from ray.train._internal.session import get_session

    event = getattr(get_session(), "stop_event", None)
    return bool(event is not None and event.is_set())


def _run_on_ray(spec, out: Path, pending: list[Trial], earlier: dict[str, int], address, max_concurrent, echo,
                history: dict[str, list[tuple[float, float]]], finished: dict[str, str]) -> None:
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1")
    import logging

    import ray
    from ray import tune

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                     log_to_driver=False, configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise SweepDirError(f"cannot reach Ray at {address}: {(str(e).splitlines() or [''])[0]}") from None
    try:
        trainable = tune.with_parameters(
            _trainable, sweep_dir=str(out), configs={t.name: t.config.to_dict() for t in pending},
            stages=list(spec.stages), threads=max(1, int(spec.cpus)),
            max_minutes=spec.asha["max"] if spec.asha and spec.asha["time"] == "minutes" else None,
        )
        trainable = tune.with_resources(trainable, {"cpu": spec.cpus, "gpu": spec.gpus})
        progress = _make_progress_callback()(out, [t.name for t in pending], earlier, echo)
        tuner = tune.Tuner(
            trainable,
            param_space={"name": tune.grid_search([t.name for t in pending])},
            tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or 0, num_samples=1,
                                        scheduler=_scheduler(spec.asha, out, history, {t.name for t in pending}, finished)),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(out / ".ray"), verbose=0, callbacks=[progress],
                failure_config=tune.FailureConfig(max_failures=0), log_to_file=True,
            ),
        )
        tuner.fit()  # the scheduler's stops are in the trials' status already (``_scheduler``)
    finally:
        if started_here:
            ray.shutdown()


def _scheduler(settings: dict[str, Any] | None, out: Path, history, running: set[str], finished: dict[str, str]):
    """Ray Tune's ASHA for the spec's settings, its rungs holding what earlier invocations recorded and each stop
    written to the trial's status at once (None: every trial runs to its end)."""
    if not settings:
        return None

    def stopped(name: str | None, result: dict[str, Any]) -> None:
        if name:
            record = read_status(out, name)
            record.update(status="stopped", error=None, stopped_at={k: result.get(k) for k in ("sequences", "minutes")})
            write_status(out, name, record)

    return seeded_asha(settings, history, running, finished, on_stop=stopped)


def _make_progress_callback():
    from ray import tune

    class _Progress(tune.Callback):
        """One line per trial state change, with the running count done / running / pending / failed."""

        def __init__(self, out: Path, names: list[str], earlier: dict[str, int], echo):
            self.out, self.echo = out, echo
            self.state = {n: "pending" for n in names}
            self.earlier = earlier  # trials finished by earlier invocations: done, stopped

        def _line(self, name: str, state: str, detail: str = "") -> None:
            self.state[name] = state
            c = {s: sum(1 for v in self.state.values() if v == s) + self.earlier.get(s, 0)
                 for s in ("done", "running", "pending", "failed", "stopped")}
            counts = (f"done {c['done']} / running {c['running']} / pending {c['pending']} / "
                      f"failed {c['failed']}" + (f" / stopped {c['stopped']}" if c["stopped"] else ""))
            self.echo(f"[{counts}] {name}: {state}{': ' + detail if detail else ''}")

        def on_trial_start(self, iteration, trials, trial, **info):
            self._line(trial.config["name"], "running")

        def on_trial_complete(self, iteration, trials, trial, **info):
            name = trial.config["name"]
            record = read_status(self.out, name)
            last = trial.last_result or {}
            if record.get("status") == "done":
                self._line(name, "done")
            elif record.get("status") == "stopped":  # written when the scheduler decided it (``_scheduler``)
                at = (record.get("stopped_at") or {}).get("sequences") or last.get("sequences")
                self._line(name, "stopped", f"by the scheduler at {at:,} sequences" if at else "by the scheduler")
            elif record.get("status") == "running" and not record.get("error"):
                self._line(name, "interrupted", "continues from its last checkpoint with --resume")
            else:
                self._line(name, "failed", record.get("error") or "no status written")

        def on_trial_error(self, iteration, trials, trial, **info):
            name = trial.config["name"]
            record = read_status(self.out, name)
            detail = record.get("error") or "the Ray worker died (see DIR/.ray for its log)"
            self._line(name, "failed", detail)

    return _Progress
