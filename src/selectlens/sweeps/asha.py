"""What a trial reports to an early-stopping scheduler, and Ray Tune's ASHA with the rungs a sweep already holds.

ASHA (asynchronous successive halving) keeps, per rung, the metric of every trial that reached it, and stops
a trial that arrives at a rung worse than the best 1/reduction of those. Ray Tune keeps that record in memory
only, so a driver that is killed loses it, and a fresh ASHA on ``--resume`` would meet its first trials with
empty rungs and let every one of them through. ``seeded_asha`` rebuilds the rungs from the trials' own
``metrics.jsonl`` before the resumed sweep starts: finished and stopped trials fill the rungs they reached, and
a trial that continues from its checkpoint keeps the rungs it has passed (it is not judged again on them).
Training is deterministic, so these are the values an uninterrupted sweep's ASHA saw.

With ``time: minutes`` the rungs start empty on a resume: a trial's minutes count from the start of the
invocation that runs it, so earlier invocations' wall times are not on the same clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selectlens.config import config_from_dict
from selectlens.rundir import read_jsonl
from selectlens.sweeps.trial import trial_dir


def reference_name(config: dict[str, Any]) -> str | None:
    """The reference baseline a trial's epochs are measured against, where the family names one up front."""
    from selectlens.baselines import suite_for
    from selectlens.tasks.protocol import make_task

    try:
        return suite_for(make_task(config_from_dict(config, stored=True), device="cpu")).reference_name()
    except NotImplementedError:  # chosen on training data (selection tasks): only test_loss is reported
        return None


def epoch_report(record: dict[str, Any], reference: str | None, minutes: float) -> dict[str, Any]:
    """What a trial reports to the scheduler after an epoch: sequences, minutes, test_loss and, with a
    reference, ``excess_ratio`` = test loss / the reference's − 1 on the same test split."""
    out = {"sequences": int(record["sequences"]), "minutes": minutes, "test_loss": float(record["test_loss"])}
    ref = record.get("baselines", {}).get(reference)
    if ref:
        out["excess_ratio"] = out["test_loss"] / ref - 1
    return out


def rung_history(sweep_dir: Path, configs: dict[str, dict[str, Any]], settings: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    """Per trial name, its ``(time, metric)`` after every epoch it has recorded, in ``settings``' time and metric
    (empty where the time is minutes, or the trial has no epochs yet)."""
    if settings["time"] != "sequences":
        return {}
    history: dict[str, list[tuple[float, float]]] = {}
    for name, config in configs.items():
        records = read_jsonl(trial_dir(sweep_dir, name) / "metrics.jsonl")
        if not records:
            continue
        reference = reference_name(config)
        points = []
        for record in records:
            report = epoch_report(record, reference, 0.0)
            if settings["metric"] in report:
                points.append((float(report["sequences"]), float(report[settings["metric"]])))
        if points:
            history[name] = points
    return history


def seeded_asha(settings: dict[str, Any], history: dict[str, list[tuple[float, float]]] | None = None,
                running: set[str] = frozenset()):
    """Ray Tune's ASHA for the spec's settings, its rungs holding ``history``: the trials named in ``running``
    (the ones this invocation runs) keep theirs under their new Tune trial, the others under their name."""
    from ray.tune.schedulers import ASHAScheduler

    class SeededASHA(ASHAScheduler):
        def __init__(self):
            # The budget itself is the trial's (its epochs capped in sequences, its training time in minutes), so
            # that a trial that uses all of it still evaluates; ASHA's own stop at max_t lies just beyond it.
            super().__init__(time_attr=settings["time"], metric=settings["metric"], mode="min",
                             max_t=settings["max"] * 1.01 + 1, grace_period=settings["grace"],
                             reduction_factor=settings["reduction"])
            for name, points in (history or {}).items():
                if name not in running:
                    self._seed(f"earlier:{name}", points)

        def on_trial_add(self, tune_controller, trial):
            super().on_trial_add(tune_controller, trial)
            name = (trial.config or {}).get("name")
            if name in running and name in (history or {}):
                self._seed(trial.trial_id, history[name])

        def _seed(self, key: str, points: list[tuple[float, float]]) -> None:
            """Record ``points`` as ASHA itself does, result by result: in the highest rung reached and not yet
            recorded for this trial (the decisions themselves were taken when the points were reported)."""
            for bracket in self._brackets:
                for time, metric in points:
                    for milestone, recorded in bracket._rungs:  # highest rung first
                        if time >= milestone and key not in recorded:
                            recorded[key] = self._metric_op * metric
                            break

    return SeededASHA()
