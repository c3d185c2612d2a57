import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``selectlens`` in a subprocess, as a user would."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "selectlens.cli", *args],
        capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


TINY_RUN = ["data.train_samp_per_class=600", "training.epochs=2", "training.batch_size=64",
            "eval.sequences=1000", "eval.temperature_sequences=200", "model.n_embd=32"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run directory made by `selectlens run` on a tiny config (train → eval → interpret)."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    args = ["run", "--out", str(run), "--quiet"] + [a for o in TINY_RUN for a in ("--set", o)]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    return run, res


def chromium_path() -> str | None:
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright. Required in CI; skipped elsewhere if absent."""
    exe = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if exe is None or sync_playwright is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs chromium and playwright for the browser tests")
        pytest.skip("chromium or playwright not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture(autouse=True)
def _torch_global_state_is_left_as_found():
    """A test (or code it calls in-process) that leaves autograd's mode changed fails itself instead of
    breaking the tests after it; grad mode and torch's thread count are restored after every test."""
    import torch

    grad, threads = torch.is_grad_enabled(), torch.get_num_threads()
    yield
    changed = torch.is_grad_enabled() != grad
    torch.set_grad_enabled(grad)
    torch.set_num_threads(threads)
    assert not changed, "the test left torch's grad mode changed"
