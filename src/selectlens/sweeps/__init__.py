"""Many runs: sweep specs, Ray Tune execution (resumable), aggregation across seeds, the sweep report."""

from selectlens.sweeps.spec import SpecError, SweepSpec, Trial, load_spec, parse_spec
from selectlens.sweeps.engine import SweepResult, run_sweep
from selectlens.sweeps.store import SweepDirError, read_sweep

__all__ = ["SpecError", "SweepDirError", "SweepResult", "SweepSpec", "Trial", "load_spec", "parse_spec", "read_sweep", "run_sweep"]
