"""Data flows one way: config → tasks → (baselines) → model → (rundir) → train | evaluate → interpret → sweeps | benchmarks → cli."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "selectlens"
LEVEL = {"errors": -1, "fileio": -1, "threads": -1, "config": 0, "tasks": 1, "baselines": 2, "model": 2, "rundir": 3,
         "train": 4, "evaluate": 4, "interpret": 5, "sweeps": 6, "benchmarks": 6, "cli": 7}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "selectlens" else None


def test_no_back_edges():
    problems = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        me = _stage(".".join(rel.parts))
        if me is None or me == "__init__" or me not in LEVEL:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                other = _stage(name)
                if other in LEVEL and other != me and LEVEL[other] >= LEVEL[me]:
                    problems.append(f"{rel} imports {name}")
    assert not problems, problems


def test_train_and_evaluate_never_import_each_other():
    for a, b in (("train", "evaluate"), ("evaluate", "train")):
        for path in (SRC / a).rglob("*.py"):
            assert f"selectlens.{b}" not in path.read_text(), path
