"""Sweep specs: a base config, overrides, a grid of dotted keys, seeds, per-trial resources, stages.

A spec is a YAML mapping::

    base: default                  # a preset name or a config file (relative to the spec's folder)
    set: {training.epochs: 40}     # overrides applied to every trial (``--set`` semantics)
    grid: {data.N: [6, 11, 21, 41]}
    seeds: [0, 1]
    resources: {cpus: 1, gpus: 0}  # per trial; gpus may be a fraction (0.25 = four trials per GPU)
    stages: [train, eval]          # train → eval; interpret optional
    scheduler:                     # optional early stopping (Ray Tune's ASHA) on each epoch's report
      asha: {metric: excess_ratio, time: sequences, max: 2000000, grace: 200000, reduction: 3}

The grid's Cartesian product times the seeds gives the trials. Every trial's
config is built and validated here, before anything runs, so an unknown key or
a value the config refuses is one :class:`SpecError` line naming the trial.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from selectlens.config import Config, ConfigError, apply_overrides, config_from_dict, read_yaml, resolve_config_path
from selectlens.errors import InputError

SPEC_KEYS = ("base", "set", "grid", "seeds", "resources", "stages", "scheduler")
ASHA_KEYS = ("metric", "time", "max", "grace", "reduction")
ASHA_METRICS = ("test_loss", "excess_ratio")  # excess_ratio: test loss / the reference baseline's − 1
ASHA_TIMES = ("sequences", "minutes")
STAGES = ("train", "eval", "interpret")
RESOURCE_KEYS = ("cpus", "gpus")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


class SpecError(InputError):
    """A sweep spec that cannot run, phrased as one line."""


@dataclass(frozen=True)
class Trial:
    """One run of a sweep: its directory name, grid point, seed and validated config."""

    name: str
    point: dict[str, Any]  # grid key → value
    seed: int
    config: Config

    @property
    def overrides(self) -> list[str]:
        """The ``--set`` overrides this trial adds to the spec's base (grid point and seed)."""
        return [f"{k}={json.dumps(v)}" for k, v in self.point.items()] + [f"seed={self.seed}"]


@dataclass
class SweepSpec:
    """A parsed, validated sweep spec (see the module docstring)."""

    base: str
    overrides: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int]
    cpus: float = 1.0
    gpus: float = 0.0
    stages: list[str] = field(default_factory=lambda: ["train", "eval"])
    base_dir: Path = Path(".")
    asha: dict[str, Any] | None = None  # the ASHA scheduler's settings (see ASHA_KEYS), or None

    def to_dict(self) -> dict[str, Any]:
        """The spec as written back to ``DIR/spec.yaml`` (base made absolute, so it resumes from anywhere)."""
        return {
            "base": str(_base_path(self.base, self.base_dir)),
            "set": dict(self.overrides),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "seeds": list(self.seeds),
            "resources": {"cpus": self.cpus, "gpus": self.gpus},
            "stages": list(self.stages),
        } | ({"scheduler": {"asha": dict(self.asha)}} if self.asha else {})

    def base_raw(self) -> dict[str, Any]:
        """The base config mapping with the spec's ``set`` overrides applied."""
        raw = read_yaml(_base_path(self.base, self.base_dir))
        return apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in self.overrides.items()])

    def trials(self) -> list[Trial]:
        """Every trial, in grid order then seed order; each config validated (one line naming the trial)."""
        try:
            raw = self.base_raw()
        except ConfigError as e:
            raise SpecError(f"spec base/set: {e}") from None
        out: list[Trial] = []
        keys = list(self.grid)
        for values in itertools.product(*(self.grid[k] for k in keys)):
            point = dict(zip(keys, values))
            for seed in self.seeds:
                name = trial_name(point, seed)
                try:
                    overrides = [f"{k}={json.dumps(v)}" for k, v in point.items()] + [f"seed={seed}"]
                    cfg = self._within_budget(config_from_dict(apply_overrides(raw, overrides)))
                except ConfigError as e:
                    raise SpecError(f"trial {name}: {e}") from None
                out.append(Trial(name, point, seed, cfg))
        names = [t.name for t in out]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise SpecError(f"two trials share the name {dup}: grid values must differ after making them file names")
        return out


    def _within_budget(self, cfg: Config) -> Config:
        """With an ASHA budget in sequences, a trial trains at most that many: its epochs are capped."""
        if not self.asha or self.asha["time"] != "sequences":
            return cfg
        from selectlens.train.plan import EpochPlan

        per_epoch = EpochPlan.from_config(cfg).n_train
        epochs = min(cfg.training.epochs, max(1, math.ceil(self.asha["max"] / per_epoch)))
        return cfg if epochs == cfg.training.epochs else cfg.model_copy(update={"training": cfg.training.model_copy(update={"epochs": epochs})})


def curriculum_before_grace(spec: SweepSpec, trials: list[Trial]) -> str | None:
    """A line for the sweep's log where ASHA's first rung (in sequences) comes before some trials' curricula
    reach full size: those are judged on the full-size task before they have trained on it. It counts the
    ones that never reach full size within their budget apart, and names a grace that judges every one after
    its curriculum only where such a grace fits the budget. None where no curriculum ends after the first rung."""
    from selectlens.train.plan import EpochPlan

    if not spec.asha or spec.asha["time"] != "sequences":
        return None
    grace, ends, never = spec.asha["grace"], [], 0
    for t in trials:
        cur, data = t.config.training.curriculum, t.config.data
        if cur is None:
            continue
        plan, step = EpochPlan.from_config(t.config), cur.end_step(data.d_d, data.N)
        if step >= plan.total_steps:  # an infinite step too
            never += 1
        elif (end := plan.sequences_before(int(step))) > grace:
            ends.append(end)
    if not ends and not never:
        return None
    parts = ([f"{len(ends)} trials' curricula reach full size after up to {max(ends):,} training sequences, past "
              f"ASHA's first rung at {grace:,}"] if ends else [])
    parts += [f"{never} trials' curricula do not reach full size within their budget"] if never else []
    fits = ends and not never and max(ends) <= spec.asha["max"]
    return ("note: " + "; ".join(parts) + "; ASHA judges them on the full-size task before they have trained at full size"
            + (f" (a scheduler.asha.grace of {max(ends):,} or more judges every one after)" if fits else ""))


def _base_path(base: str, base_dir: Path) -> Path:
    p = Path(base)
    if not p.is_absolute() and (base_dir / p).exists():
        p = base_dir / p
    try:
        return resolve_config_path(p).resolve()
    except ConfigError as e:
        raise SpecError(f"spec base: {e}") from None


def _value_text(v: Any) -> str:
    text = json.dumps(v, separators=(",", ":")) if not isinstance(v, str) else v
    return _UNSAFE.sub("_", text).strip("_") or "_"


def trial_name(point: dict[str, Any], seed: int) -> str:
    """A readable, file-safe directory name: ``data.N=6_seed=0``."""
    parts = [f"{_UNSAFE.sub('_', k)}={_value_text(v)}" for k, v in point.items()]
    return "_".join(parts + [f"seed={seed}"])


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file; every problem is one :class:`SpecError` line."""
    p = Path(path)
    try:
        raw = read_yaml(p)
    except ConfigError as e:
        raise SpecError(str(e).replace("config", "sweep spec", 1)) from None
    return parse_spec(raw, base_dir=p.parent)


def parse_spec(raw: Any, *, base_dir: Path = Path(".")) -> SweepSpec:
    """Validate a spec mapping (types, keys, stages, resources); trial configs are checked by ``trials()``."""
    if not isinstance(raw, dict):
        raise SpecError(f"sweep spec must be a mapping, got {type(raw).__name__}")
    unknown = [str(k) for k in raw if k not in SPEC_KEYS]
    if unknown:
        raise SpecError(f"unknown sweep spec key {unknown[0]!r} (known: {', '.join(SPEC_KEYS)})")
    base = raw.get("base", "default")
    if not isinstance(base, str) or not base:
        raise SpecError("spec key base must be a preset name or a config path")
    overrides = _mapping(raw.get("set"), "set")
    grid = _mapping(raw.get("grid"), "grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(f"spec grid.{key} must be a non-empty list of values")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SpecError(f"spec grid.{key} repeats a value")
        if key == "seed":
            raise SpecError("spec grid.seed: list seeds under the key seeds")
    seeds = _seeds(raw.get("seeds", [0]))
    cpus, gpus = _resources(raw.get("resources"))
    stages = _stages(raw.get("stages", ["train", "eval"]))
    spec = SweepSpec(base, overrides, grid, seeds, cpus, gpus, stages, base_dir, _scheduler(raw.get("scheduler")))
    _base_path(base, base_dir)
    return spec


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"spec key {what} must be a mapping of dotted config keys, got {type(value).__name__}")
    out: dict[str, Any] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k or any(not part for part in k.split(".")):
            raise SpecError(f"spec {what}: {k!r} is not a dotted config key")
        out[k] = v
    return out


def _seeds(value: Any) -> list[int]:
    if not isinstance(value, list) or not value:
        raise SpecError("spec key seeds must be a non-empty list of integers >= 0")
    for s in value:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise SpecError(f"spec seeds: {s!r} is not an integer >= 0")
    if len(set(value)) != len(value):
        raise SpecError("spec seeds repeat a value")
    return list(value)


def _resources(value: Any) -> tuple[float, float]:
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise SpecError("spec key resources must be a mapping like {cpus: 1, gpus: 0}")
    unknown = [str(k) for k in value if k not in RESOURCE_KEYS]
    if unknown:
        raise SpecError(f"unknown spec resources key {unknown[0]!r} (known: cpus, gpus)")
    out = []
    for key, default, lowest in (("cpus", 1, 1e-9), ("gpus", 0, 0)):
        v = value.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lowest:
            raise SpecError(f"spec resources.{key} must be a number {'> 0' if lowest else '>= 0'} (got {v!r})")
        if v > 1 and v != int(v):
            raise SpecError(f"spec resources.{key}: a fraction only below 1 (got {v!r})")
        out.append(float(v))
    return out[0], out[1]


def _stages(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SpecError(f"spec key stages must be a list from {', '.join(STAGES)}")
    bad = [s for s in value if s not in STAGES]
    if bad:
        raise SpecError(f"spec stages: unknown stage {bad[0]!r} (known: {', '.join(STAGES)})")
    chosen = [s for s in STAGES if s in value]
    if chosen[0] != "train" or chosen != list(STAGES[: len(chosen)]):
        raise SpecError("spec stages must be train, train+eval or train+eval+interpret")
    return chosen


def _scheduler(value: Any) -> dict[str, Any] | None:
    """``{asha: {...}}`` → the ASHA settings with defaults, each checked (one line per problem)."""
    if value is None:
        return None
    if not isinstance(value, dict) or list(value) != ["asha"] or not isinstance(value["asha"], dict):
        raise SpecError("spec key scheduler must be {asha: {metric, time, max, grace, reduction}}")
    asha = value["asha"]
    unknown = [str(k) for k in asha if k not in ASHA_KEYS]
    if unknown:
        raise SpecError(f"unknown spec scheduler.asha key {unknown[0]!r} (known: {', '.join(ASHA_KEYS)})")
    out = {"metric": asha.get("metric", "excess_ratio"), "time": asha.get("time", "sequences"),
           "max": asha.get("max"), "grace": asha.get("grace"), "reduction": asha.get("reduction", 3)}
    if out["metric"] not in ASHA_METRICS:
        raise SpecError(f"spec scheduler.asha.metric must be one of {', '.join(ASHA_METRICS)} (got {out['metric']!r})")
    if out["time"] not in ASHA_TIMES:
        raise SpecError(f"spec scheduler.asha.time must be one of {', '.join(ASHA_TIMES)} (got {out['time']!r})")
    for key, lowest in (("max", 0), ("grace", 0), ("reduction", 1)):
        v = out[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= lowest:
            raise SpecError(f"spec scheduler.asha.{key} must be a number > {lowest} (got {v!r})")
    if out["grace"] > out["max"]:
        raise SpecError("spec scheduler.asha.grace must not exceed max")
    return out


def spec_yaml(spec: SweepSpec) -> str:
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)
