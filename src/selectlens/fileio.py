"""Safe file writing shared by every stage: atomic writes and real writability probes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename) where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename over ``path``.

    A reader (or a crash) sees the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def probe_writable(directory: Path, error: type[Exception]) -> None:
    """Raise ``error`` unless a file can be created in ``directory`` (or the nearest existing ancestor
    it would be created under). Tries for real: ``os.access`` says yes to root even on read-only mounts."""
    probe = Path(directory)
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise error(f"output location is not a directory: {probe}")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise error(f"output directory is not writable: {probe} ({e.strerror})") from None


def read_input_file(path: str | Path, error: type[Exception], what: str) -> bytes:
    """The bytes of a user-supplied file; a missing, directory or empty path is one ``error`` line."""
    p = Path(path)
    if not p.exists():
        raise error(f"{what} not found: {p}")
    if p.is_dir():
        raise error(f"{what} path is a directory: {p}")
    raw = p.read_bytes()
    if not raw:
        raise error(f"{what} is empty: {p}")
    return raw


def parse_safetensors(raw: bytes, path: str | Path, error: type[Exception]) -> tuple[dict, dict[str, str]]:
    """Tensors and string metadata of a safetensors blob; anything malformed is one ``error`` line."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(raw)
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + n])
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as e:
        raise error(f"{path} is not a valid safetensors file ({(str(e).splitlines() or [''])[0][:80]})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    meta = {str(k): v for k, v in meta.items() if isinstance(v, str)} if isinstance(meta, dict) else {}
    return tensors, meta
