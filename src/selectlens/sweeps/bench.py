"""``selectlens bench sweep``: 8 tiny trials through Ray Tune vs 8 sequential ``selectlens train`` processes.

Both sides run in this process tree on the same machine, one after the other,
with the same tiny configs. The Ray side's wall time includes starting and
stopping the local Ray cluster, so the engine's overhead shows; the CLI side
pays a Python + torch start-up per run. With more CPUs than one trial needs,
Ray runs trials in parallel and the ratio says whether that outweighs its
overhead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TINY_TRIAL = {"data.train_samp_per_class": 1000, "training.epochs": 3, "training.batch_size": 64,
              "eval.sequences": 500, "eval.temperature_sequences": 200, "model.n_embd": 32}


def bench_sweep(trials: int = 8, cpus_per_trial: float = 1.0, workdir: str | Path | None = None) -> dict[str, Any]:
    """Wall seconds of ``trials`` tiny trainings via Ray Tune and via sequential CLI runs; ratio CLI / Ray."""
    from selectlens.sweeps.engine import run_sweep
    from selectlens.sweeps.spec import parse_spec

    with tempfile.TemporaryDirectory(prefix="selectlens-bench-sweep-", dir=workdir) as tmp:
        root = Path(tmp)
        spec = parse_spec({"set": TINY_TRIAL, "seeds": list(range(trials)), "resources": {"cpus": cpus_per_trial},
                           "stages": ["train"]})
        t0 = time.perf_counter()
        result = run_sweep(spec, root / "ray", echo=lambda line: None)
        ray_s = time.perf_counter() - t0
        if result.count("done") != trials:
            raise RuntimeError(f"bench sweep: only {result.count('done')} of {trials} Ray trials finished")
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, int(cpus_per_trial))), PYTHONWARNINGS="ignore")
        sets = [a for k, v in TINY_TRIAL.items() for a in ("--set", f"{k}={v}")]
        t0 = time.perf_counter()
        for seed in range(trials):
            cmd = [sys.executable, "-m", "selectlens.cli", "train", "--out", str(root / "cli" / str(seed)),
                   "--seed", str(seed), "--quiet", *sets]
            subprocess.run(cmd, check=True, env=env, capture_output=True)
        cli_s = time.perf_counter() - t0
        same = all((root / "cli" / str(s) / "metrics.jsonl").read_bytes()
                   == (root / "ray" / "trials" / f"seed={s}" / "metrics.jsonl").read_bytes() for s in range(trials))
    return {"trials": trials, "cpus": os.cpu_count(), "cpus_per_trial": cpus_per_trial, "ray_s": ray_s,
            "cli_s": cli_s, "ratio": cli_s / ray_s, "identical_metrics": same}
