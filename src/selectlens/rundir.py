"""Run directories (shared by train, evaluate and interpret): layout, creation rules, checkpoints (atomic), metrics.

::

    RUN/
      config.json, config.yaml        the resolved config (json is authoritative)
      model.safetensors               latest weights (spec in metadata)
      checkpoints/epoch_000010/       model.safetensors + state.pt, renamed into place atomically
      metrics.jsonl                   one line per epoch (no wall-clock times: reproducible)
      timing.jsonl                    wall-clock seconds per epoch, and the number of processes
    .RUN.lock                         beside the run (it survives ``--force`` replacing RUN): held
                                      with ``flock`` by the one process writing RUN (see run_dir_lock)
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import torch

from selectlens.config import Config, ConfigError, config_from_dict
from selectlens.errors import InputError
from selectlens.fileio import atomic_write, fault_point, fsync_dir, probe_writable, write_halves
from selectlens.model.checkpoint import CheckpointError, model_bytes, read_torch_file

_CKPT = re.compile(r"^epoch_(\d{6})$")
KEEP_CHECKPOINTS = 2


class RunDirError(InputError):
    """A run directory that cannot be created, resumed or read."""


class RunDirLockedError(RunDirError):
    """Another process holds the run directory's write lock."""


# Locks this process holds, and (in the environment, for its children such as torchrun's ranks) the
# locks an ancestor holds: a child of the holder writes under its parent's lock instead of being refused.
RUN_LOCKS_ENV = "SELECTLENS_RUN_LOCKS"
_HELD: set[str] = set()


def run_lock_path(run_dir: str | Path) -> Path:
    """``PARENT/.NAME.lock`` for ``PARENT/NAME`` (symlinks resolved, so two spellings share one lock).

    The lock lives beside the run, not in it: ``--force`` replaces the directory wholesale, and a lock
    inside it would go with it.
    """
    run = Path(run_dir).resolve()
    return run.parent / f".{run.name}.lock"


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path, *, existing: bool = False) -> Iterator[Path]:
    """Hold the exclusive write lock of ``run_dir`` for the ``with`` block; refuse at once when another
    process holds it (:class:`RunDirLockedError`, naming the directory and the holder's pid).

    Every command that writes into a run directory (train, eval, interpret, run, a sweep trial) writes
    under it; readers (predict, export-tl) take none, and see only complete files (every write is a
    rename). The lock is ``flock`` on :func:`run_lock_path`: the kernel drops it when the holder exits
    or is killed, so a stale lock cannot outlive its process. Re-entrant within a process and for
    its children (torchrun's ranks), which inherit :data:`RUN_LOCKS_ENV`. ``existing``: the command
    writes into a run that must exist (eval, interpret); a missing one is refused before a lock file is made.
    """
    if existing and not Path(run_dir).is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    path = run_lock_path(run_dir)
    key = str(path)
    if key in _HELD or key in os.environ.get(RUN_LOCKS_ENV, "").split(os.pathsep):
        yield path
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        probe_writable(path.parent, RunDirError)  # the usual one line for an unwritable location
        raise RunDirError(f"cannot lock run directory {run_dir}: {e.strerror} ({path})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd)
        os.close(fd)
        raise RunDirLockedError(f"run directory {run_dir} is being written by another process "
                                f"(pid {holder}); wait for it to finish or stop it") from None
    before = os.environ.get(RUN_LOCKS_ENV)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD.add(key)
        os.environ[RUN_LOCKS_ENV] = os.pathsep.join(filter(None, [before, key]))
        yield path
    finally:
        _HELD.discard(key)
        if before is None:
            os.environ.pop(RUN_LOCKS_ENV, None)
        else:
            os.environ[RUN_LOCKS_ENV] = before
        os.close(fd)  # closing the descriptor releases the lock


def _lock_holder(fd: int) -> str:
    """The pid the holder wrote into the lock file ("unknown" if it has not written it yet)."""
    import time

    for _ in range(20):  # the holder writes its pid right after locking
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


def check_interpret_memory(config: Config, sequences: int, device: str, hint: str = "lower --sequences") -> None:
    """Refuse (one line) an interpretation of ``sequences`` held-out sequences that would not fit in
    ``device``'s memory; ``interpret``, ``run`` and sweep trials call it before any work."""
    from selectlens.tasks.memory import check_memory, interpret_bytes

    check_memory(interpret_bytes(config, sequences), f"interpreting {sequences:,} sequences", device, hint)


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
        fault_point("run_dir.before_rename")
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
        return config_from_dict(raw, stored=True)
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


# Every write boundary of a training run, in the order a run reaches them; the crash tests
# (tests/test_crash_safety.py) kill a run at each one, resume it and compare it bitwise
# with an uninterrupted run. Set SELECTLENS_FAULT_POINT=name[:count] to kill at one.
FAULT_POINTS = (
    "run_dir.before_rename",            # new run directory assembled under a temporary name
    "metrics.mid_write",                # half an epoch's metrics line on disk
    "metrics.written",                  # metrics line written, timing line not yet
    "timing.mid_write",
    "timing.written",                   # epoch logged, its checkpoint not yet begun
    "checkpoint.begin",                 # temporary checkpoint directory created, empty
    "checkpoint.model.mid_write",       # half the checkpoint's weights written
    "checkpoint.state.mid_write",       # weights written, half the optimizer/RNG state
    "checkpoint.before_rename",         # complete checkpoint under its temporary name
    "checkpoint.renamed",               # checkpoint in place, run-level weights still the previous epoch's
    "run_model.mid_write",              # half the run-level model.safetensors temp file
    "run_model.before_rename",          # run-level temp file complete, not yet renamed
    "checkpoint.before_prune",          # run-level weights updated, old checkpoints not yet pruned
    "checkpoint.mid_prune",             # one old checkpoint removed
    "resume.run_model.before_rename",   # resume restoring the run-level weights from the checkpoint
    "resume.metrics.before_rename",     # resume rewinding metrics.jsonl to the checkpoint
    "resume.timing.before_rename",
)


def save_checkpoint(run_dir: Path, epoch: int, model: torch.nn.Module, state: dict[str, Any]) -> Path:
    """Write ``checkpoints/epoch_XXXXXX`` atomically (temp dir + rename), update ``model.safetensors``, prune."""
    root = run_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch_{epoch:06d}"
    weights = model_bytes(model, {"epoch": str(epoch)})
    _write_checkpoint_dir(root, final, {"model.safetensors": weights, "state.pt": _torch_bytes(state)})
    fault_point("checkpoint.renamed")
    atomic_write(run_dir / "model.safetensors", weights, fault="run_model")
    fault_point("checkpoint.before_prune")
    tidy_checkpoints(run_dir)
    return final


def tidy_checkpoints(run_dir: Path) -> None:
    """Keep the newest :data:`KEEP_CHECKPOINTS` checkpoints; remove temporaries a killed writer left
    (checkpoint temp dirs, atomic-write temp files). Called after each checkpoint and on resume."""
    for _, old in checkpoint_dirs(run_dir)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
        fault_point("checkpoint.mid_prune")
    for stale in (run_dir / "checkpoints").glob(".epoch_*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in run_dir.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _write_checkpoint_dir(root: Path, final: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a temporary directory under ``root``, fsync, rename it to ``final``."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        fault_point("checkpoint.begin")
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                write_halves(f, data, f"checkpoint.{name.split('.')[0]}.mid_write")
                _fault_delay()  # testing hook: widen the window in which a kill tears the write
        fsync_dir(tmp)
        fault_point("checkpoint.before_rename")
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore_run_weights(run_dir: Path, checkpoint: Path) -> bool:
    """Make the run-level ``model.safetensors`` equal the checkpoint's; True when it had to be rewritten.

    A kill between a checkpoint's rename and the run-level write leaves the previous epoch's
    weights at the top of the run; every resume repairs that, even with nothing left to train.
    """
    want = (checkpoint / "model.safetensors").read_bytes()
    tidy_checkpoints(run_dir)
    top = run_dir / "model.safetensors"
    if top.is_file() and top.read_bytes() == want:
        return False
    atomic_write(top, want, fault="resume.run_model")
    return True


# Files computed from a run's weights by `eval` and `interpret`.
DERIVED_OUTPUTS = ("eval.json", "eval.md", "training_curves.png", "context_length.png", "report")


def set_aside_stale_outputs(run_dir: Path, tag: str, *, weights_changed: bool) -> list[Path]:
    """Move eval/report outputs made from other weights than the run's current ones to
    ``RUN/stale_<tag>/`` (never deleted: they are a user's results); returns the moved paths.

    ``eval.json`` records the sha256 of the weights it evaluated (``model_sha256``); outputs
    whose hash differs from the run-level ``model.safetensors`` are stale; outputs without a
    recorded hash (older versions, or a report without eval) count as stale when ``weights_changed``.
    """
    present = [run_dir / name for name in DERIVED_OUTPUTS if (run_dir / name).exists()]
    if not present or not _derived_are_stale(run_dir, weights_changed):
        return []
    dest = run_dir / f"stale_{tag}"
    dest.mkdir(exist_ok=True)
    moved = []
    for p in present:
        target = dest / p.name
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.rename(p, target)
        moved.append(target)
    fsync_dir(run_dir)
    return moved


def _derived_are_stale(run_dir: Path, weights_changed: bool) -> bool:
    try:
        recorded = json.loads((run_dir / "eval.json").read_text(encoding="utf-8")).get("model_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if recorded is None:
        return weights_changed
    return recorded != weights_sha256(run_dir)


def weights_sha256(run_dir: Path) -> str | None:
    """sha256 of the run-level ``model.safetensors`` (None when absent): identifies the weights
    that eval/report outputs were computed from (the bytes are deterministic)."""
    import hashlib

    top = run_dir / "model.safetensors"
    return hashlib.sha256(top.read_bytes()).hexdigest() if top.is_file() else None


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


def append_jsonl(path: Path, record: dict[str, Any], *, fault: str | None = None) -> None:
    """Append one JSON line (fsynced); ``fault`` names its fault points (``.mid_write``, ``.written``)."""
    with open(path, "ab") as f:
        write_halves(f, (json.dumps(record, sort_keys=False) + "\n").encode(), f"{fault}.mid_write" if fault else None)
    if fault:
        fault_point(f"{fault}.written")


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


def truncate_jsonl(path: Path, max_epoch: int, *, fault: str | None = None) -> None:
    """Keep only records with ``epoch <= max_epoch`` (resuming rewinds the log to the checkpoint).

    Lines are kept byte for byte (a torn last line is dropped), so a resumed log equals an
    uninterrupted one; the file is rewritten only when something changes.
    """
    if not path.exists():
        atomic_write(path, b"", fault=fault)
        return
    text = path.read_text(encoding="utf-8")
    kept = []
    for line in text.splitlines(keepends=True):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if line.endswith("\n") and int(record.get("epoch", 0)) <= max_epoch:
            kept.append(line)
    if "".join(kept) != text:
        atomic_write(path, "".join(kept).encode(), fault=fault)


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
