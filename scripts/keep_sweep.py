"""Keep a sweep's results in the repository, finished or still under way: its small files under ``records/NAME/``.

A long search (``configs/sweeps/raw_recipe.yaml`` runs for hours) is run in pieces with ``--resume``; each
piece can be kept, and ``record.json`` says how far it had got. What the docs' tables read is copied: the
spec, ``sweep.json``, every trial's status and, per trial, ``config.json``, ``eval.json``, ``eval.md``,
``metrics.jsonl`` and ``timing.jsonl`` (no weights, no checkpoints). The record is a sweep directory for
``scripts/results_tables.py`` (views ``sweep``, ``sweep-trials`` and ``asha``) and for
``selectlens sweep-report``.

Usage::

    python scripts/keep_sweep.py sweeps/raw_recipe --spec configs/sweeps/raw_recipe.yaml        # → records/raw_recipe
    python scripts/keep_sweep.py sweeps/raw_recipe --spec configs/sweeps/raw_recipe.yaml --force  # a later piece

``--spec`` is the spec file the sweep was started from: it must give exactly the sweep's trials, so the
record's command (``selectlens sweep SPEC --out sweeps/NAME --max-concurrent N``; ``record.json`` also names the
``--resume`` that continued it after each stop) rebuilds them.
The record is built beside its place and renamed into it, so an existing record (``--force``) is replaced
whole or not at all.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

FILES = ("config.json", "eval.json", "eval.md", "metrics.jsonl", "timing.jsonl")


def _keep_run():
    spec = importlib.util.spec_from_file_location("keep_run", Path(__file__).resolve().parent / "keep_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


keep_run = _keep_run()
KeepError = keep_run.KeepError  # a sweep or record the script cannot use; printed as one ``error:`` line


def progress(sweep: Path) -> str:
    """How far the sweep has got, in one line."""
    from selectlens.sweeps.asha import rung_table
    from selectlens.sweeps.store import read_sweep
    from selectlens.sweeps.trial import read_status

    spec, trials = read_sweep(sweep)
    if spec.asha:
        return rung_table(sweep)[2]
    statuses = [read_status(sweep, t.name).get("status", "pending") for t in trials]
    return f"{len(trials)} trials: " + ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))


def check(sweep: Path, spec_file: Path) -> list[str]:
    """The sweep's trial names, after checking that ``spec_file`` gives exactly its trials."""
    from selectlens.errors import SelectLensError
    from selectlens.sweeps import load_spec
    from selectlens.sweeps.store import read_sweep

    try:
        _, trials = read_sweep(sweep)
        rebuilt = load_spec(spec_file).trials()
    except SelectLensError as err:
        raise KeepError(str(err)) from None
    if [(t.name, t.config.to_dict()) for t in rebuilt] != [(t.name, t.config.to_dict()) for t in trials]:
        raise KeepError(f"{spec_file} does not give the trials of {sweep} (another spec, or a changed preset)")
    return [t.name for t in trials]


def record_spec(spec_file: Path, record: Path) -> bytes:
    """The spec as the record keeps it: a base given as a file path is made relative to the record (a preset
    name stays as it is), so the record reads back on any clone that has that file."""
    import yaml

    raw = yaml.safe_load(spec_file.read_text(encoding="utf-8"))
    base = Path(str(raw.get("base", "")))
    if raw.get("base") and not base.is_absolute() and (spec_file.parent / base).is_file():
        raw["base"] = os.path.relpath((spec_file.parent / base).resolve(), record.resolve())
    elif raw.get("base") and base.is_absolute() and base.is_file():
        raw["base"] = os.path.relpath(base, record.resolve())
    return yaml.safe_dump(raw, sort_keys=False).encode()


def build(sweep: Path, spec_file: Path, names: list[str], into: Path, meta: dict[str, Any], final_name: str) -> None:
    """Write the record's files into the empty directory ``into`` (renamed to ``final_name`` beside it)."""
    from selectlens.fileio import atomic_write

    atomic_write(into / "spec.yaml", record_spec(spec_file, into.parent / final_name))
    atomic_write(into / "sweep.json", (sweep / "sweep.json").read_bytes())
    for name in names:
        state = sweep / "state" / f"{name}.json"
        if state.is_file():
            atomic_write(into / "state" / state.name, state.read_bytes())
        for file in FILES:
            if (sweep / "trials" / name / file).is_file():
                atomic_write(into / "trials" / name / file, (sweep / "trials" / name / file).read_bytes())
    atomic_write(into / "record.json", (json.dumps(meta, indent=1) + "\n").encode())


def keep(sweep: Path, spec_file: Path, to: Path, force: bool, machine: str | None, max_concurrent: int = 2) -> Path:
    if not (sweep / "sweep.json").is_file():
        raise KeepError(f"{sweep}: not a sweep directory (no sweep.json)")
    record = to / sweep.name
    if record.exists() and not force:
        raise KeepError(f"{record} exists (--force replaces it)")
    names = check(sweep, spec_file)
    out = f"sweeps/{sweep.name}"
    command = f"selectlens sweep {shlex.quote(str(spec_file))} --out {shlex.quote(out)} --max-concurrent {max_concurrent}"
    meta = {"from": str(sweep), "command": command, "resume": f"selectlens sweep --out {shlex.quote(out)} --resume",
            "progress": progress(sweep),
            "machine": machine or keep_run.this_machine(), "code": keep_run.code_revision()}
    to.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{sweep.name}.", suffix=".new", dir=to))
    try:
        build(sweep, spec_file, names, new, meta, record.name)
        check(new, spec_file)  # the record reads back as the same sweep
        old = Path(tempfile.mkdtemp(prefix=f".{sweep.name}.", suffix=".old", dir=to))
        try:
            if record.exists():
                os.rename(record, old / "record")
            os.rename(new, record)
        except OSError:
            if (old / "record").exists() and not record.exists():
                os.rename(old / "record", record)  # the old record back where it was
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, help="a sweep directory (finished or not)")
    p.add_argument("--spec", type=Path, required=True, help="the spec file the sweep was started from")
    p.add_argument("--to", type=Path, default=Path("records"), help="where records go (default: records/)")
    p.add_argument("--force", action="store_true", help="replace an existing record")
    p.add_argument("--machine", default=None, help="the machine the sweep ran on (default: this one)")
    p.add_argument("--max-concurrent", type=int, default=2, help="the sweep's --max-concurrent, for its command (default 2)")
    a = p.parse_args(argv)
    return keep_run.exit_code(lambda: print(keep(a.sweep, a.spec, a.to, a.force, a.machine, a.max_concurrent)))


if __name__ == "__main__":
    sys.exit(main())
