"""Keep a finished run's results in the repository: its small files under ``records/NAME/``.

A run directory's weights and checkpoints stay where they are (``runs/`` is not committed); what the
docs' tables read — ``config.json``, ``eval.json``, ``eval.md``, ``metrics.jsonl``, ``timing.jsonl`` —
is copied, with ``record.json`` saying where it came from and the command that made it. A record is a
run directory for ``scripts/results_tables.py`` (every run view reads only those files), so a table
made from records can be regenerated on any clone, long after the run's machine is gone.

Usage::

    python scripts/keep_run.py runs/mixed_noise_cpu_s0 runs/mixed_noise_cpu_s1   # → records/NAME/
    python scripts/keep_run.py runs/x --preset mixed_noise_cpu --to records      # the preset its command names

The command is rebuilt from the run's config: ``selectlens train --config PRESET --seed S --set …`` with
one ``--set`` per key where the run differs from the preset (``--preset``, default the run's
``wandb.name``), checked by loading it back, and ``--nproc N`` where ``timing.jsonl`` logs N > 1
processes, then ``selectlens eval``. A run without ``eval.json`` is
refused, and so is a run stopped before its last epoch (``--max-minutes``, a kill: the command would train
the whole schedule) and a record that exists (``--force`` replaces it, atomically per file, and removes the
old record's files the new run lacks). Every run is checked before any record is written. ``record.json``
also names the machine (``--machine``; by default the one the script runs on, which is the run's own
when it is kept where it was trained) and the code (``git`` commit, ``+dirty`` with uncommitted changes):
the command rebuilds the config from the preset as that commit has it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

FILES = ("config.json", "eval.json", "eval.md", "metrics.jsonl", "timing.jsonl")
NAMING = {"out_dir", "wandb"}  # where a run is written and what it is called: not part of its recipe
FLAGS = ("seed", "device")  # keys `selectlens train` takes as flags


class KeepError(Exception):
    """A run or record the script cannot use; printed as one ``error:`` line."""


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and prefix + key not in ("training.curriculum",):
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _shaping(config: dict[str, Any]) -> dict[str, Any]:
    """The flattened keys that shape a run (not where it is written or what it is called)."""
    return {k: v for k, v in _flat(config).items() if k.split(".")[0] not in NAMING}


def train_command(config: dict[str, Any], preset: str, out: str, nproc: int = 1) -> str:
    """``selectlens train …`` that rebuilds ``config`` from ``preset`` (checked by loading it back), on
    ``nproc`` processes (``--nproc``: the same run up to float summation order, in less wall time)."""
    from selectlens.config import ConfigError, load_config

    try:
        base = _shaping(load_config(preset).model_dump(mode="json"))
        want = _shaping(config)
        sets = [f"{k}={_value(v)}" for k, v in want.items() if k not in FLAGS and base.get(k, object()) != v]
        rebuilt = _shaping(load_config(preset, sets + [f"{k}={_value(config[k])}" for k in FLAGS]).model_dump(mode="json"))
    except ConfigError as err:
        raise KeepError(f"--preset {preset}: {err}") from None
    if rebuilt != want:
        raise KeepError(f"the run's config cannot be rebuilt from preset {preset} with --set overrides")
    parts = ["selectlens", "train", "--config", preset]
    for k in FLAGS:
        if k == "seed" or base[k] != want[k]:
            parts += [f"--{k}", str(config[k])]
    for s in sets:
        parts += ["--set", s]
    if nproc > 1:
        parts += ["--nproc", str(nproc)]
    return shlex.join(parts + ["--out", out])


def this_machine() -> str:
    """One line naming this machine: cores, CPU model and vector instruction set, torch build."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    isa = torch.backends.cpu.get_cpu_capability()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core {platform.machine()} CPU ({model}, {isa}), {gpu}; torch {torch.__version__}"


def code_revision() -> str:
    """The git commit of this checkout, ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise KeepError(f"{path}: {err}") from None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a ``.jsonl`` log (none when it is missing); a malformed line is one error."""
    if not path.is_file():
        return []
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as err:
        raise KeepError(f"{path}: {err}") from None
    if not all(isinstance(r, dict) for r in rows):
        raise KeepError(f"{path}: a line is not a JSON object")
    return rows


def plan(run: Path, to: Path, preset: str | None, force: bool) -> dict[str, Any]:
    """Check that ``run`` can be kept and what its record says; writes nothing."""
    if not (run / "config.json").is_file():
        raise KeepError(f"{run}: not a run directory (no config.json)")
    if not (run / "eval.json").is_file():
        raise KeepError(f"{run}: no eval.json (run `selectlens eval --run {run}` first)")
    record = to / run.name
    if record.exists() and not force:
        raise KeepError(f"{record} exists (--force replaces it)")
    config, ev = _read(run / "config.json"), _read(run / "eval.json")
    if not isinstance(config, dict) or not isinstance(config.get("training"), dict) or "seed" not in config:
        raise KeepError(f"{run}/config.json: not a SelectLens run config (no training section or seed)")
    epochs = [m.get("epoch") for m in _jsonl(run / "metrics.jsonl")]
    if not epochs or epochs[-1] != config["training"].get("epochs"):
        raise KeepError(f"{run}: trained {epochs[-1] if epochs else 0} of its {config['training'].get('epochs')} "
                        f"epochs (stopped early); its command would train them all")
    counts = [t.get("processes", 1) for t in _jsonl(run / "timing.jsonl")]  # absent: kept before it was logged
    bad = next((c for c in counts if not isinstance(c, int) or isinstance(c, bool) or c < 1), None)
    if bad is not None:
        raise KeepError(f"{run}/timing.jsonl: processes must be a positive integer, got {bad!r}")
    processes = max(counts, default=1)
    preset = preset or (config.get("wandb") or {}).get("name")
    if not preset:
        raise KeepError(f"{run}: its config names no preset (give --preset)")
    out = f"runs/{run.name}"
    flags = ""
    if isinstance(ev, dict) and ev.get("sequences") not in (None, (config.get("eval") or {}).get("sequences")):
        flags = f" --sequences {ev['sequences']}"  # eval was asked for another number of held-out sequences
    try:
        train = train_command(config, preset, out, processes)
    except (KeyError, TypeError, AttributeError) as err:
        raise KeepError(f"{run}/config.json: not a SelectLens run config ({type(err).__name__}: {err})") from None
    command = f"{train} && selectlens eval --run {shlex.quote(out)}{flags}"
    return {"run": run, "record": record, "meta": {"from": str(run), "preset": preset, "command": command}}


def write(planned: dict[str, Any], machine: str, code: str) -> Path:
    """Copy the planned run's small files into its record with ``record.json``; returns the record."""
    from selectlens.fileio import atomic_write

    run, record = planned["run"], planned["record"]
    record.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if (run / name).is_file():
            atomic_write(record / name, (run / name).read_bytes())
        elif (record / name).is_file():  # --force: the old record's file the new run does not have
            (record / name).unlink()
    meta = {**planned["meta"], "machine": machine, "code": code}
    atomic_write(record / "record.json", (json.dumps(meta, indent=1) + "\n").encode())
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished run directories (with eval.json)")
    p.add_argument("--to", type=Path, default=Path("records"), help="where records go (default: records/)")
    p.add_argument("--preset", default=None, help="the preset the command starts from (default: the run's wandb.name)")
    p.add_argument("--force", action="store_true", help="replace an existing record")
    p.add_argument("--machine", default=None, help="the machine the run was trained on (default: this one)")
    a = p.parse_args(argv)

    def keep_all() -> None:
        if len({run.name for run in a.runs}) < len(a.runs):
            raise KeepError("two runs of the same name would make one record")
        planned = [plan(run, a.to, a.preset, a.force) for run in a.runs]  # every run checked before any is written
        machine, code = a.machine or this_machine(), code_revision()
        for p in planned:
            print(write(p, machine, code))

    return exit_code(keep_all)


def exit_code(keep_it: Callable[[], None]) -> int:
    """Run ``keep_it``; a record it cannot make is one ``error:`` line and exit code 2, never a traceback."""
    try:
        keep_it()
    except (KeepError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
