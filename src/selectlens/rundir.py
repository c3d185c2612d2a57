"""Run directories (shared by train, evaluate and interpret): layout, creation rules, checkpoints (atomic), metrics.

::

    RUN/
      config.json, config.yaml        the resolved config (json is authoritative)
      model.safetensors               latest weights (spec in metadata)
      checkpoints/epoch_000010/       model.safetensors + state.pt, renamed into place atomically
      metrics.jsonl                   one line per epoch (no wall-clock times: reproducible)
      timing.jsonl                    wall-clock seconds per epoch
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from selectlens.config import Config, ConfigError, config_from_dict
from selectlens.errors import InputError
from selectlens.fileio import atomic_write, fsync_dir, probe_writable
from selectlens.model.checkpoint import CheckpointError, model_bytes, read_torch_file

_CKPT = re.compile(r"^epoch_(\d{6})$")
KEEP_CHECKPOINTS = 2


class RunDirError(InputError):
    """A run directory that cannot be created, resumed or read."""


def prepare_run_dir(run_dir: Path, config: Config, *, force: bool = False) -> None:
    """Create a fresh run directory holding the config; refuse an existing non-empty one unless ``force``.

    The directory is assembled under a temporary name and renamed into place,
    so a run directory always has its ``config.json``, even after a kill.
    """
    run_dir = Path(run_dir)
    check_new_run_dir(run_dir, force=force)
    parent = run_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".new", dir=parent))
    except OSError as e:
        raise RunDirError(f"cannot create run directory {run_dir}: {e.strerror}") from None
    try:
        write_config(tmp, config)
        if run_dir.exists():  # empty, or being replaced with --force
            old = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".old", dir=parent))
            os.rename(run_dir, old / "run")
            os.rename(tmp, run_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, run_dir)
        fsync_dir(parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RunDirError(f"cannot create run directory {run_dir}: {e.strerror}") from None


def check_new_run_dir(run_dir: Path, *, force: bool = False) -> None:
    """Refuse, without touching anything, a run path that is a file, a non-empty directory (unless
    ``force``), or a location where nothing can be written."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run path exists and is not a directory: {run_dir}")
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise RunDirError(f"run directory exists: {run_dir} (use --resume to continue it or --force to replace it)")
    probe_writable(run_dir.parent, RunDirError)


def write_config(run_dir: Path, config: Config) -> None:
    atomic_write(run_dir / "config.json", json.dumps(config.to_dict(), indent=2).encode())
    atomic_write(run_dir / "config.yaml", config.to_yaml().encode())


def read_run_config(run_dir: Path) -> Config:
    """The config a run was made with."""
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    path = run_dir / "config.json"
    if not path.exists():
        raise RunDirError(f"{run_dir} is not a run directory (no config.json)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunDirError(f"{path} is not valid JSON") from None
    try:
        return config_from_dict(raw)
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _CKPT.match(p.name)
        if m and (p / "model.safetensors").is_file() and (p / "state.pt").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_checkpoint(run_dir: Path, epoch: int, model: torch.nn.Module, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/epoch_XXXXXX`` atomically (temp dir + rename), update ``model.safetensors``, prune."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch_{epoch:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".epoch_{epoch:06d}.", dir=root))
    try:
        weights = model_bytes(model, {"epoch": str(epoch)})
        for name, data in (("model.safetensors", weights), ("state.pt", _torch_bytes(state))):
            with open(tmp / name, "wb") as f:
                half = len(data) // 2
                f.write(data[:half])
                _fault_delay()  # testing hook: widen the window in which a kill tears the write
                f.write(data[half:])
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write(run_dir / "model.safetensors", weights)
    for _, old in checkpoint_dirs(run_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".epoch_*"):  # temp dirs left by a killed writer
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _fault_delay() -> None:
    """Sleep ``SELECTLENS_FAULT_DELAY_S`` seconds mid-write; only the crash-safety tests set it."""
    delay = os.environ.get("SELECTLENS_FAULT_DELAY_S")
    if delay:
        import time

        time.sleep(float(delay))


def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def load_latest_checkpoint(run_dir: Path) -> tuple[int, Path, dict[str, Any]] | None:
    """The newest checkpoint whose state loads (``weights_only=True``); older ones are fallbacks."""
    for epoch, path in reversed(checkpoint_dirs(run_dir)):
        try:
            state = read_torch_file(path / "state.pt")
        except CheckpointError:
            continue
        if isinstance(state, dict) and state.get("epoch") == epoch:
            return epoch, path, state
    return None


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a jsonl file; a torn last line (from a kill mid-write) is ignored."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def truncate_jsonl(path: Path, max_epoch: int) -> None:
    """Keep only records with ``epoch <= max_epoch`` (resuming rewinds the log to the checkpoint)."""
    kept = [r for r in read_jsonl(path) if int(r.get("epoch", 0)) <= max_epoch]
    atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept).encode())


def load_run_model(run_dir: str | Path, device: str | torch.device = "cpu"):
    """``(model, config)`` of a run: its ``model.safetensors``, else its newest loadable checkpoint."""
    from selectlens.model.checkpoint import load_model
    from selectlens.model.gpt2 import ModelSpec

    run = Path(run_dir)
    config = read_run_config(run)
    spec = ModelSpec.from_config(config)
    candidates = [run / "model.safetensors"] + [p / "model.safetensors" for _, p in reversed(checkpoint_dirs(run))]
    first_error: CheckpointError | None = None
    for path in candidates:
        if not path.exists():
            continue
        try:
            model = load_model(path, device=device)
        except CheckpointError as e:
            first_error = first_error or e
            continue
        if model.spec != spec:
            raise RunDirError(f"{path}: model shape does not match the run's config.json")
        return model, config
    if first_error is not None:
        raise first_error
    raise RunDirError(f"{run} has no model weights (model.safetensors); train it first")
