"""The documentation: the strict MkDocs build passes, and every relative link in README.md and
docs/*.md points at a file in the repository and, with #anchor, at a heading that exists."""

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from conftest import ROOT

DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*$", re.M)
EXPLICIT_ID = re.compile(r"\{[^}]*#([\w-]+)[^}]*\}\s*$")


def slug(text: str) -> str:
    """Python-Markdown's default ``toc`` slug of a heading."""
    text = re.sub(r"`|\*|_(?=\w)|(?<=\w)_", "", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    """The ids of a page's headings: explicit ``{#id}`` (attr_list) or the toc slug."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    out = set()
    for _, title in HEADING.findall(text):
        m = EXPLICIT_ID.search(title)
        out.add(m.group(1) if m else slug(title))
    return out


def links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]  # relative links only


def test_pages_exist():
    names = {p.name for p in DOCS.glob("*.md")}
    assert {"index.md", "design.md", "interpretability.md", "results.md", "benchmarks.md", "reliability.md",
            "scaling.md", "tutorial.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    bad = []
    for target in links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            bad.append(f"{target}: no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.name}: " + "; ".join(bad)


def test_design_anchors_that_code_links_to_are_stable():
    """Docstrings and the README link to these sections of docs/design.md by id."""
    wanted = {"selection-tasks", "regression", "classification", "selection-layout", "candidate-fitting", "raw-tasks",
              "interleaved-layout", "one-token-layout", "curriculum", "task-diversity", "sparse-or-dense", "model",
              "training", "baselines", "sees", "selection-baselines", "context-stacking", "bayes-matched-ridge",
              "full-information-bound", "raw-baselines", "bayes-mixture", "dmmse", "sparse-dense-bound",
              "best-single-ridge", "evaluation", "run-directory", "eval-json", "config", "own-task"}
    assert wanted <= anchors(DOCS / "design.md")


def test_no_reference_to_the_internal_design_document():
    for path in [ROOT / "README.md", *DOCS.rglob("*.md")]:
        assert "DESIGN §" not in path.read_text(encoding="utf-8"), path


def test_strict_docs_build(tmp_path):
    import importlib.util
    import os

    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs the docs tools: pip install -e '.[test]' (or '.[docs]')")
        pytest.skip("mkdocs / mkdocstrings not installed (pip install -e '.[docs]')")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stderr[-4000:]
    assert (tmp_path / "site" / "design.html").is_file()
    api = (tmp_path / "site" / "api" / "tasks.html").read_text(encoding="utf-8")
    assert "make_task" in api  # the API reference is generated from the docstrings
