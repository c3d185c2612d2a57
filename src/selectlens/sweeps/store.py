"""A sweep directory on disk: reading back its spec and trials (used by the engine and the reports)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from selectlens.config import ConfigError, config_from_dict
from selectlens.errors import InputError
from selectlens.sweeps.spec import SpecError, SweepSpec, Trial, parse_spec


class SweepDirError(InputError):
    """A sweep directory that cannot be created or resumed."""



def read_sweep(out: Path) -> tuple[SweepSpec, list[Trial]]:
    """The spec and trials of an existing sweep directory (for ``--resume`` and the reports)."""
    out = Path(out)
    if not (out / "spec.yaml").is_file() or not (out / "sweep.json").is_file():
        raise SweepDirError(f"{out} is not a sweep directory (no spec.yaml / sweep.json)")
    try:
        spec = parse_spec(yaml.safe_load((out / "spec.yaml").read_text(encoding="utf-8")), base_dir=out)
        trials = spec.trials()
    except (SpecError, yaml.YAMLError) as e:
        raise SweepDirError(f"{out / 'spec.yaml'}: {e}") from None
    saved = json.loads((out / "sweep.json").read_text(encoding="utf-8"))["trials"]
    if [(t["name"], t["point"], t["seed"]) for t in saved] != [(t.name, t.point, t.seed) for t in trials]:
        raise SweepDirError(f"{out}: spec.yaml no longer gives the trials in sweep.json")
    # each trial keeps the config it was started with (a newer SelectLens adds defaults for new keys)
    try:
        return spec, [Trial(t.name, t.point, t.seed, config_from_dict(s["config"], stored=True)) for t, s in zip(trials, saved)]
    except ConfigError as e:
        raise SweepDirError(f"{out / 'sweep.json'}: {e}") from None
