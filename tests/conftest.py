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
