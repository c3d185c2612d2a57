"""What a trial reports to an early-stopping scheduler, and Ray Tune's ASHA with the rungs a sweep already holds.

ASHA (asynchronous successive halving) keeps, per rung, the metric of every trial that reached it, and stops
a trial that arrives at a rung worse than the best 1/reduction of those. Ray Tune keeps that record in memory
only, so a driver that is killed loses it, and a fresh ASHA on ``--resume`` would meet its first trials with
empty rungs and let every one of them through. ``seeded_asha`` rebuilds the rungs from the trials' own
``metrics.jsonl`` before the resumed sweep starts: finished and stopped trials fill the rungs they reached, and
a trial that continues from its checkpoint keeps the rungs below the highest it reached and is judged at that
one again when it reports from that rung on, with the value it had there (the kill may have come between
the record and the judgement). Training is
deterministic, so these are the values an uninterrupted sweep's ASHA saw (exactly so where each rung is
crossed by an epoch of its own, as in the shipped specs). A stop is written to the trial's status the moment
ASHA decides it, so a stopped trial stays stopped however the driver ends.

With ``time: minutes`` the rungs start empty on a resume: a trial's minutes count from the start of the
invocation that runs it, so earlier invocations' wall times are not on the same clock.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

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


def full_task_values(record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """An epoch record's test losses on the full task (a curriculum run's ``full_size`` split, else the record's
    own), and whether they are instead at a curriculum point: a curriculum record written before runs kept
    that split, on a smaller task."""
    full = record.get("full_size")
    return (full, False) if full is not None else (record, "curriculum" in record)


def epoch_report(record: dict[str, Any], reference: str | None, minutes: float) -> dict[str, Any]:
    """What a trial reports to the scheduler after an epoch: sequences, minutes, test_loss and, with a
    reference, ``excess_ratio`` = test loss / the reference's − 1 on the same test split.

    A curriculum run's values are those of its full-size split (the record's ``full_size``), so that it is
    judged on the task every other trial is judged on. A curriculum record without one (written before runs
    kept it) has only its point's values, on a smaller task: they are reported marked ``at_point``."""
    out: dict[str, Any] = {"sequences": int(record["sequences"]), "minutes": minutes}
    source, at_point = full_task_values(record)
    if at_point:
        out["at_point"] = True
    out["test_loss"] = float(source["test_loss"])
    ref = source.get("baselines", {}).get(reference)
    if ref:
        out["excess_ratio"] = out["test_loss"] / ref - 1
    return out


def rung_history(sweep_dir: Path, configs: dict[str, dict[str, Any]], settings: dict[str, Any],
                 at_point: set[tuple[str, float]] | None = None) -> dict[str, list[tuple[float, float]]]:
    """Per trial name, its ``(time, metric)`` after every epoch it has recorded, in ``settings``' time and metric
    (empty where the time is minutes, or the trial has no epochs yet). Values measured at a curriculum point
    (``epoch_report``'s ``at_point``) are left out, being on a smaller task; with ``at_point`` (a set) they are
    kept all the same, and each one's ``(trial name, time)`` added to it."""
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
            if settings["metric"] not in report or (report.get("at_point") and at_point is None):
                continue
            points.append((float(report["sequences"]), float(report[settings["metric"]])))
            if report.get("at_point"):
                at_point.add((name, points[-1][0]))
        if points:
            history[name] = points
    return history


def seeded_asha(settings: dict[str, Any], history: dict[str, list[tuple[float, float]]] | None = None,
                running: set[str] = frozenset(), finished: dict[str, str] | None = None,
                on_stop: Callable[[str, dict[str, Any]], None] | None = None):
    """Ray Tune's ASHA for the spec's settings, its rungs holding ``history``.

    The trials named in ``running`` (the ones this invocation runs) keep theirs under their new Tune trial,
    except the highest rung each had reached: a kill may have come between its record and ASHA's judgement,
    so once it reports from that rung on it is judged there again, with the value it had at the rung (a
    trial that resumes from a checkpoint below the rung trains back to it first). The others
    (``finished``: name → ``done`` or ``stopped``) keep theirs under their name, their last result fed again as
    Ray does when a trial ends. ``on_stop(name, result)`` is called the moment ASHA stops a trial, so that
    the stop outlives a killed driver.
    """
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    history, finished = history or {}, finished or {}

    class SeededASHA(ASHAScheduler):
        def __init__(self):
            # The budget itself is the trial's (its epochs capped in sequences, its training time in minutes), so
            # that a trial that uses all of it still evaluates: max_t lies just beyond it, and a report at or past
            # the budget is never a stop (on_trial_result).
            super().__init__(time_attr=settings["time"], metric=settings["metric"], mode="min",
                             max_t=settings["max"] * 1.01 + 1, grace_period=settings["grace"],
                             reduction_factor=settings["reduction"])
            self._names: dict[str, str] = {}
            self._rejudge: dict[str, tuple[float, float]] = {}  # trial id → (its highest rung, its value there)
            for name, points in history.items():
                if name not in running:
                    repeats = {"done": 2, "stopped": 1}.get(finished.get(name, ""), 0)  # final report, completion
                    self._seed(f"earlier:{name}", points + [points[-1]] * repeats)

        def on_trial_add(self, tune_controller, trial):
            super().on_trial_add(tune_controller, trial)
            name = (trial.config or {}).get("name")
            self._names[trial.trial_id] = name
            if name in running and name in history:
                self._seed(trial.trial_id, history[name], rejudge=True)

        def on_trial_result(self, tune_controller, trial, result):
            action = TrialScheduler.CONTINUE
            milestone = self._rejudge.get(trial.trial_id, (math.inf,))[0]
            if result.get(self._time_attr, -math.inf) >= milestone and self._metric in result:  # back at the rung
                milestone, value = self._rejudge.pop(trial.trial_id)
                action = self._trial_info[trial.trial_id].on_result(trial, milestone, self._metric_op * value)
                self._num_stopped += action == TrialScheduler.STOP
            if action != TrialScheduler.STOP:
                action = super().on_trial_result(tune_controller, trial, result)
            if action == TrialScheduler.STOP and result.get(self._time_attr, -math.inf) >= settings["max"]:
                # The top rung is the budget itself (and max_t lies past it): a trial judged there has trained all
                # of it, so a stop saves nothing and would cost the trial its evaluation. Its value stays on the
                # rung; it runs on to eval.
                action = TrialScheduler.CONTINUE
                self._num_stopped -= 1
            if action == TrialScheduler.STOP and on_stop:
                on_stop(self._names.get(trial.trial_id), result)
            return action

        def _seed(self, key: str, points: list[tuple[float, float]], rejudge: bool = False) -> None:
            bracket = self._trial_info.get(key) if rejudge else None
            for b in [bracket] if bracket else self._brackets:
                milestones = [milestone for milestone, _ in b._rungs]  # highest first
                values = recorded_at_rungs(points, milestones)
                top = next((i for i, v in enumerate(values) if v is not None), None)
                if rejudge and top is not None:
                    self._rejudge[key] = (milestones[top], values[top])
                    values = values[:top] + [None] + values[top + 1:]
                for (_, recorded), value in zip(b._rungs, values):
                    if value is not None:
                        recorded[key] = self._metric_op * value  # ASHA keeps rewards: mode "min" negates

    return SeededASHA()


def recorded_at_rungs(points: list[tuple[float, float]], milestones: list[float]) -> list[float | None]:
    """The metric ASHA records at each rung for a trial that reported ``points`` in order: each result goes to
    the highest rung it has reached where the trial has no value yet (Ray's ``_Bracket.on_result``); None
    where it has none."""
    values: dict[float, float] = {}
    for time, metric in points:
        for milestone in sorted(milestones, reverse=True):
            if time >= milestone and milestone not in values:
                values[milestone] = metric
                break
    return [values.get(m) for m in milestones]


def rungs(settings: dict[str, Any]) -> list[float]:
    """ASHA's rungs for the spec's settings, lowest first: grace, grace·reduction, … up to max (as Ray builds them)."""
    count = int(math.log((settings["max"] * 1.01 + 1) / settings["grace"]) / math.log(settings["reduction"]) + 1)
    return [settings["grace"] * settings["reduction"] ** k for k in range(count)]


def rung_table(sweep_dir: Path) -> tuple[list[str], list[list[str]], str]:
    """One row per trial that has trained an epoch, furthest rung first and best there first: its grid point,
    status, sequences, and the metric ASHA recorded at each rung it reached (``recorded_at_rungs``: the first
    epoch at or past the rung, where each rung is crossed by an epoch of its own) and at its last epoch;
    plus one line counting every trial, started or not. A trial's values measured at its curriculum point (on
    a smaller task; ``rung_history``) are marked °, and the line says so."""
    from selectlens.sweeps.store import read_sweep
    from selectlens.sweeps.trial import read_status

    spec, trials = read_sweep(sweep_dir)
    if not spec.asha:
        raise ValueError(f"{sweep_dir}: the sweep has no ASHA scheduler")
    settings = spec.asha
    milestones = rungs(settings) if settings["time"] == "sequences" else []  # minutes: no common clock (above)
    marked: set[tuple[str, float]] = set()
    history = rung_history(sweep_dir, {t.name: t.config.to_dict() for t in trials}, {**settings, "time": "sequences"},
                           at_point=marked)
    keys = list(trials[0].point) if trials else []
    rows, counts, total = [], {"done": 0, "stopped": 0, "unfinished": 0, "not started": 0}, 0
    for t in trials:
        status, points = read_status(sweep_dir, t.name).get("status", "pending"), history.get(t.name, [])
        if not points:
            counts["done" if status == "done" else "not started"] += 1
            continue
        kind = status if status in ("done", "stopped") else "unfinished"
        counts[kind] += 1
        total += points[-1][0]
        at_rung = recorded_at_rungs(points, milestones)
        when = recorded_at_rungs([(time, time) for time, _ in points], milestones) + [points[-1][0]]  # each value's epoch
        marks = ["°" if (t.name, time) in marked else "" for time in when]
        top = max((i for i, v in enumerate(at_rung) if v is not None), default=-1)  # the highest rung with a value
        cells = [_cell(t.point[k]) for k in keys] + [str(t.seed), kind, f"{points[-1][0]:,.0f}"]
        cells += ["—" if v is None else f"{v:.3f}{m}" for v, m in zip(at_rung + [points[-1][1]], marks)]
        rows.append(((-top, at_rung[top] if top >= 0 else points[-1][1]), cells))
    head = keys + ["seed", "status", "sequences"] + [f"{settings['metric']} at {r:,.0f}" for r in milestones] + ["at the last epoch"]
    line = (f"{len(trials)} trials: {counts['done']} done, {counts['stopped']} stopped by ASHA, {counts['unfinished']} unfinished, "
            f"{counts['not started']} not started; {total:,.0f} training sequences in all"
            + ("; ° marks a value measured at the trial's curriculum point (a smaller d and n), recorded before "
               "curriculum runs kept a full-size test split, and not on ASHA's rungs" if marked else ""))
    return head, [cells for _, cells in sorted(rows, key=lambda r: r[0])], line


def _cell(value: Any) -> str:
    import json

    return "none" if value is None else value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
