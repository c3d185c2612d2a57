"""Data files: a :class:`TaskBatch` or :class:`RawBatch` as safetensors, with the resolved config
(and the task's name) as metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from selectlens.config import Config, ConfigError, config_from_dict
from selectlens.errors import InputError
from selectlens.fileio import atomic_write, parse_safetensors, probe_writable, read_input_file, safetensors_bytes, stream_safetensors
from selectlens.tasks.memory import check_disk, check_memory, generation_bytes, sequence_bytes
from selectlens.tasks.generators import TaskBatch
from selectlens.tasks.raw import RawBatch

DATA_TENSORS = ("tokens", "target", "alpha", "x_train", "y_train", "x_test", "y_test", "w")
RAW_DATA_TENSORS = ("tokens", "target", "x", "y", "w", "sigma", "is_regression")


class DataFileError(InputError):
    """A data file that cannot be read or written, in one line."""


def check_writable(path: str | Path, *, force: bool = False) -> Path:
    """Refuse to clobber an existing file (unless ``force``), a directory, or an unwritable location."""
    p = Path(path)
    if p.is_dir():
        raise DataFileError(f"output path is a directory: {p}")
    if p.exists() and not force:
        raise DataFileError(f"output file exists: {p} (use --force to overwrite)")
    probe_writable(p.parent if str(p.parent) else Path("."), DataFileError)
    return p


def save_task_batch(path: str | Path, batch: TaskBatch | RawBatch, config: Config, *, force: bool = False) -> Path:
    """Write ``batch``'s tensors (exactly :data:`DATA_TENSORS`, or :data:`RAW_DATA_TENSORS` for a raw
    task) and ``config`` to ``path``."""
    p = check_writable(path, force=force)
    tensors = {k: v.detach().cpu().contiguous() for k, v in batch.as_dict().items()}
    atomic_write(p, safetensors_bytes(tensors, data_metadata(config)))
    return p


DATA_CHUNK = 16384  # sequences generated (and held in memory) at a time by write_data_file


def write_data_file(path: str | Path, config: Config, sequences: int, *, device: str = "cpu",
                    force: bool = False, chunk: int = DATA_CHUNK) -> Path:
    """Generate ``sequences`` sequences of ``config``'s task and stream them into ``path`` (atomic).

    Memory and disk are estimated first (one :class:`~selectlens.tasks.memory.ResourceError` line
    when they do not suffice). Sequences are drawn ``chunk`` at a time from one generator seeded
    ``config.seed`` (up to ``chunk`` sequences this is one draw, as before) and every chunk is
    checked finite before a byte is written.
    """
    from selectlens.tasks.generators import make_generator, make_task

    p = check_writable(path, force=force)
    per_chunk = min(sequences, chunk)
    hint = "lower --sequences or data.N"
    check_memory(generation_bytes(config, per_chunk), f"generating {per_chunk:,} sequences (N={config.data.N})", device, hint)
    check_disk(p, sequences * sequence_bytes(config), f"a data file of {sequences:,} sequences")
    task = make_task(config, device=device)
    gen = make_generator(config.seed, device)
    probe = task.sample(1, make_generator(0, device)).as_dict()
    layout = {k: (v.dtype, (sequences, *v.shape[1:])) for k, v in probe.items()}

    def chunks():
        for start in range(0, sequences, chunk):
            batch = task.sample(min(chunk, sequences - start), gen)
            check_finite_batch(batch, config)
            yield {k: v.cpu() for k, v in batch.as_dict().items()}

    stream_safetensors(p, layout, data_metadata(config), chunks())
    return p


def check_finite_batch(batch: TaskBatch | RawBatch, config: Config) -> None:
    """Refuse generated data holding NaN or ±inf (a config value that overflows the dtype)."""
    for name, t in batch.as_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ConfigError(f"the generated data is not finite (tensor {name!r} holds NaN or inf in {config.dtype}); "
                              "a data setting is too large for the dtype")


def data_metadata(config: Config) -> dict[str, str]:
    """A data file's metadata: the resolved config (sorted JSON) and the task's name."""
    return {"config": json.dumps(config.to_dict(), sort_keys=True), "format": "selectlens-data-1",
            "task": config.data.task_name}


def load_tokens(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None, Config | None]:
    """``(tokens [B, T, F], target or None, config or None)`` of any safetensors file holding a
    3-D floating ``tokens`` tensor: what ``predict`` needs, nothing more. ``target`` and the
    config metadata are optional (a file a user made with their own tokens has neither)."""
    p = Path(path)
    tensors, meta = parse_safetensors(read_input_file(p, DataFileError, "data file"), p, DataFileError)
    tokens = tensors.get("tokens")
    if tokens is None:
        raise DataFileError(f"data file {p} has no 'tokens' tensor (tensors: {', '.join(sorted(tensors)) or 'none'})")
    if tokens.dim() != 3 or not tokens.is_floating_point() or tokens.shape[0] == 0:
        raise DataFileError(f"data file {p}: 'tokens' must be a non-empty floating tensor [B, T, F], "
                            f"got {str(tokens.dtype).removeprefix('torch.')} {list(tokens.shape)}")
    target = tensors.get("target")
    if target is not None and not target.is_floating_point():
        raise DataFileError(f"data file {p}: 'target' is not floating point")
    try:
        config = config_from_dict(json.loads(meta["config"])) if "config" in meta else None
    except (json.JSONDecodeError, ConfigError):
        config = None  # predict does not need it
    return tokens, target, config


def load_task_batch(path: str | Path) -> tuple[TaskBatch | RawBatch, Config]:
    """Read a file written by :func:`save_task_batch`; every problem is one :class:`DataFileError` line.

    The config in the metadata says which batch it is: a :class:`RawBatch` for the raw tasks."""
    p = Path(path)
    tensors, meta = parse_safetensors(read_input_file(p, DataFileError, "data file"), p, DataFileError)
    try:
        config = config_from_dict(json.loads(meta["config"]))
    except KeyError:
        raise DataFileError(f"data file {p} has no config metadata") from None
    except (json.JSONDecodeError, ConfigError) as e:
        raise DataFileError(f"data file {p} has bad config metadata: {e}") from None
    names = RAW_DATA_TENSORS if config.data.is_raw else DATA_TENSORS
    missing = [k for k in names if k not in tensors]
    if missing:
        raise DataFileError(f"data file {p} lacks tensor {missing[0]!r}")
    if config.data.is_raw:
        batch = RawBatch(**{k: tensors[k] for k in names})
        _check_raw_shapes(p, batch, config)
        return batch, config
    batch = TaskBatch(**{k: tensors[k] for k in names})
    _check_shapes(p, batch, config)
    return batch, config


def _check_raw_shapes(p: Path, batch: RawBatch, config: Config) -> None:
    B = batch.tokens.shape[0] if batch.tokens.dim() == 3 else -1
    N, d = config.data.N, config.data.d_d
    expected = {
        "tokens": (B, 2 * N, d + 1), "target": (B, N), "x": (B, N, d), "y": (B, N), "w": (B, d),
        "sigma": (B,), "is_regression": (B,),
    }
    for name, shape in expected.items():
        t = getattr(batch, name)
        if tuple(t.shape) != shape:
            raise DataFileError(f"data file {p}: tensor {name!r} has shape {list(t.shape)}, expected {list(shape)}")
        if name == "is_regression":
            if t.dtype != torch.bool:
                raise DataFileError(f"data file {p}: tensor 'is_regression' is not boolean")
        elif not t.is_floating_point():
            raise DataFileError(f"data file {p}: tensor {name!r} is not floating point")


def _check_shapes(p: Path, batch: TaskBatch, config: Config) -> None:
    B = batch.tokens.shape[0] if batch.tokens.dim() == 3 else -1
    N, d, K = config.data.N, config.data.d_d, len(config.data.candidates)
    expected = {
        "tokens": (B, N, K + 1), "target": (B,), "alpha": (B,), "x_train": (B, N, d),
        "y_train": (B, N), "x_test": (B, N, d), "y_test": (B, N), "w": (B, d),
    }
    for name, shape in expected.items():
        got = tuple(getattr(batch, name).shape)
        if got != shape:
            raise DataFileError(f"data file {p}: tensor {name!r} has shape {list(got)}, expected {list(shape)}")
        if not getattr(batch, name).is_floating_point():
            raise DataFileError(f"data file {p}: tensor {name!r} is not floating point")
