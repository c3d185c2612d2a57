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


def atomic_write(path: Path, data: bytes, *, fault: str | None = None) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync, rename over ``path``.

    A reader (or a crash) sees the old file or the new one, never a torn one. ``fault`` names
    this write's fault points (``<fault>.mid_write``, ``<fault>.before_rename``), see :func:`fault_point`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_halves(f, data, f"{fault}.mid_write" if fault else None)
        if fault:
            fault_point(f"{fault}.before_rename")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_halves(f, data: bytes, fault: str | None) -> None:
    """Write ``data`` to the open file ``f`` and fsync; with ``fault``, a fault point sits mid-write
    (the first half flushed to disk, the second not yet written)."""
    if fault:
        half = len(data) // 2
        f.write(data[:half])
        f.flush()
        fault_point(fault)
        f.write(data[half:])
    else:
        f.write(data)
    f.flush()
    os.fsync(f.fileno())


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


# ---------------------------------------------------------------------------
# Fault injection (tests only): kill the process at a named write boundary

FAULT_ENV = "SELECTLENS_FAULT_POINT"


def fault_point(name: str) -> None:
    """SIGKILL this process at ``name`` when ``SELECTLENS_FAULT_POINT=name[:count]`` says so.

    ``count`` (default 1) picks the count-th time the point is reached, so a test can kill
    inside the third checkpoint rather than the first. Every write boundary of a run calls
    this with its own name (see :data:`selectlens.rundir.FAULT_POINTS`); unset, it costs a dict lookup.
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _FAULT_HITS[name] = _FAULT_HITS.get(name, 0) + 1
    if _FAULT_HITS[name] == int(count or 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


_FAULT_HITS: dict[str, int] = {}


# ---------------------------------------------------------------------------
# safetensors with deterministic bytes, written whole or streamed chunk by chunk

_ST_DTYPES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}


def safetensors_header(layout: dict[str, tuple[object, tuple[int, ...]]], metadata: dict[str, str]) -> bytes:
    """The length-prefixed safetensors header for tensors ``name -> (torch dtype, shape)``.

    Tensors are laid out widest dtype first, then by name, and every JSON object has sorted keys, so equal
    content gives equal bytes in every process (the ``safetensors`` package orders metadata
    by a per-process hash). The header is padded with spaces to a multiple of 8, as the
    format recommends.
    """
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name in _data_order(layout):
        dtype, shape = layout[name]
        size = _itemsize(dtype) * _numel(shape)
        key = _ST_DTYPES.get(str(dtype).removeprefix("torch."))
        if key is None:
            raise ValueError(f"tensor {name!r}: dtype {dtype} cannot be stored in safetensors")
        header[name] = {"dtype": key, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    import json

    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def _data_order(layout: dict[str, tuple[object, tuple[int, ...]]]) -> list[str]:
    """Widest dtype first, then by name: every tensor stays aligned to its item size (as safetensors does)."""
    return sorted(layout, key=lambda name: (-_itemsize(layout[name][0]), name))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _itemsize(dtype: object) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def tensor_bytes(t) -> bytes:
    """Raw little-endian bytes of a tensor (any dtype, bfloat16 and bool included)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    if flat.numel() == 0:
        return b""
    return flat.view(__import__("torch").uint8).numpy().tobytes()


def safetensors_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes for ``tensors`` (see :func:`safetensors_header`: deterministic)."""
    layout = {k: (v.dtype, tuple(v.shape)) for k, v in tensors.items()}
    return safetensors_header(layout, metadata or {}) + b"".join(tensor_bytes(tensors[k]) for k in _data_order(layout))


def stream_safetensors(path: Path, layout: dict[str, tuple[object, tuple[int, ...]]], metadata: dict[str, str], chunks) -> None:
    """Write a safetensors file atomically from ``chunks``, an iterable of ``{name: tensor}`` pieces.

    Each tensor is split along its first dimension; the pieces of one tensor must arrive in
    order and together fill its ``layout`` shape. Each tensor goes to its own spool file
    (beside ``path``), then the header and the spools are concatenated into the temporary
    output, which is renamed over ``path``: peak memory is one chunk, not the whole file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spool_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".parts", dir=path.parent))
    try:
        spools = {name: open(spool_dir / f"{i}.bin", "w+b") for i, name in enumerate(_data_order(layout))}
        try:
            for piece in chunks:
                for name, t in piece.items():
                    spools[name].write(tensor_bytes(t))
            sizes = {name: f.tell() for name, f in spools.items()}
            for name, (dtype, shape) in layout.items():
                if sizes[name] != _itemsize(dtype) * _numel(shape):
                    raise ValueError(f"tensor {name!r}: {sizes[name]} bytes streamed, expected shape {list(shape)}")
            _concatenate(path, safetensors_header(layout, metadata), [spools[n] for n in _data_order(layout)])
        finally:
            for f in spools.values():
                f.close()
    finally:
        import shutil

        shutil.rmtree(spool_dir, ignore_errors=True)


def _concatenate(path: Path, header: bytes, spools) -> None:
    import shutil

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(header)
            for f in spools:
                f.seek(0)
                shutil.copyfileobj(f, out, 1 << 22)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
