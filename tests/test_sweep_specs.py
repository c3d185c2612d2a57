"""Every sweep spec we ship parses, and each of its trials is a valid, distinct config: the grid's
Cartesian product times the seeds, counted here from the YAML itself, not from the spec parser."""

import math
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from selectlens.sweeps import load_spec

SPECS = sorted((ROOT / "configs" / "sweeps").glob("*.yaml"))


def test_the_shipped_specs_are_found():
    assert {p.stem for p in SPECS} >= {"raw_recipe", "noise_models"}


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shipped_spec_builds_every_trial(path: Path):
    raw = yaml.safe_load(path.read_text())
    expected = math.prod(len(v) for v in (raw.get("grid") or {}).values()) * len(raw.get("seeds", [0]))
    trials = load_spec(path).trials()
    assert len(trials) == expected
    assert len({t.name for t in trials}) == expected
    for t in trials:
        for key, value in t.point.items():  # the grid value reached the trial's config
            section, name = key.split(".", 1)
            got = getattr(getattr(t.config, section), name)
            got = got.model_dump() if hasattr(got, "model_dump") else got
            if isinstance(value, dict):
                assert {k: got[k] for k in value} == value, (t.name, key)
            elif isinstance(value, list):
                assert list(got) == value, (t.name, key)
            else:
                assert got == value, (t.name, key)
        assert t.config.seed == t.seed


def test_raw_recipe_trials_fit_the_asha_budget():
    """Each trial of the recipe search trains at most the scheduler's budget plus one epoch."""
    spec = load_spec(ROOT / "configs" / "sweeps" / "raw_recipe.yaml")
    budget = spec.asha["max"]
    for t in spec.trials():
        per_epoch = round(t.config.data.train_prop * t.config.data.train_samp_per_class)
        assert budget <= t.config.training.epochs * per_epoch < budget + per_epoch, t.name
