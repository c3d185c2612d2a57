"""Data flows one way: config → tasks → (baselines) → model → (rundir) → train | evaluate → interpret → sweeps | benchmarks → cli."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "selectlens"
LEVEL = {"errors": -1, "fileio": -1, "threads": -1, "config": 0, "tasks": 1, "baselines": 2, "model": 2, "rundir": 3,
         "train": 4, "evaluate": 4, "interpret": 5, "sweeps": 6, "benchmarks": 6, "cli": 7}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "selectlens" else None


def _imported_names(path: Path) -> list[str]:
    """Every module name an import in ``path`` mentions (anywhere in the file, deferred imports included)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return names


def test_no_back_edges():
    problems = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        me = _stage(".".join(rel.parts))
        if me is None or me == "__init__" or me not in LEVEL:
            continue
        for name in _imported_names(path):
            other = _stage(name)
            if other in LEVEL and other != me and LEVEL[other] >= LEVEL[me]:
                problems.append(f"{rel} imports {name}")
    assert not problems, problems


def test_train_and_evaluate_never_import_each_other():
    for a, b in (("train", "evaluate"), ("evaluate", "train")):
        for path in (SRC / a).rglob("*.py"):
            assert f"selectlens.{b}" not in path.read_text(), path


def _module_imports() -> dict[str, set[str]]:
    """Module → the selectlens modules it imports (anywhere in the file, deferred imports included)."""
    mods = {".".join(p.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in SRC.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for m, path in mods.items():
        edges[m] = {n for n in _imported_names(path) if n in mods and n != m and not m.startswith(n + ".")}
    return edges


def test_no_circular_imports():
    """No two modules import each other, directly or through others (Tarjan's strongly connected components)."""
    edges = _module_imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_no_task_family_branches_outside_tasks():
    """Families differ only in tasks/: nothing else tests which family, layout or task name it has."""
    import re

    pattern = re.compile(r"is_raw|layout\s*==|task_name|task\.name\s*==|\.label\s*==|name\s*==\s*\"(regression|classification)\"")
    hits = [f"{p.relative_to(SRC)}:{i}: {line.strip()}" for p in SRC.rglob("*.py") if "tasks" not in p.relative_to(SRC).parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits
