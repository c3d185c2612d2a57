"""Data files: a task's batch as safetensors (every tensor of its :meth:`~TaskFamily.tensor_spec`),
with the resolved config (and the task's name) as metadata."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from selectlens.config import Config, ConfigError, config_from_dict
from selectlens.errors import InputError
from selectlens.fileio import atomic_write, parse_safetensors, probe_writable, read_input_file, safetensors_bytes, stream_safetensors
from selectlens.tasks.memory import check_disk, check_memory, generation_bytes, sequence_bytes
from selectlens.tasks.protocol import Batch, make_generator, make_task



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


def save_task_batch(path: str | Path, batch: Batch, config: Config, *, force: bool = False) -> Path:
    """Write ``batch``'s tensors (its task's tensor spec) and ``config`` to ``path``."""
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
    p = check_writable(path, force=force)
    per_chunk = min(sequences, chunk)
    hint = "lower --sequences or data.N"
    check_memory(generation_bytes(config, per_chunk), f"generating {per_chunk:,} sequences (N={config.data.N})", device, hint)
    check_disk(p, sequences * sequence_bytes(config), f"a data file of {sequences:,} sequences")
    task = make_task(config, device=device)
    gen = make_generator(config.seed, device)
    layout = {k: (dtype, (sequences, *shape)) for k, (shape, dtype) in task.tensor_spec().items()}

    def chunks():
        for start in range(0, sequences, chunk):
            batch = task.sample(min(chunk, sequences - start), gen)
            check_finite_batch(batch, config)
            yield {k: v.cpu() for k, v in batch.as_dict().items()}

    stream_safetensors(p, layout, data_metadata(config), chunks())
    return p


def check_finite_batch(batch: Batch, config: Config) -> None:
    """Refuse generated data holding NaN or ±inf (a config value that overflows the dtype)."""
    for name, t in batch.as_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ConfigError(f"the generated data is not finite (tensor {name!r} holds NaN or inf in {config.dtype}); "
                              "a data setting is too large for the dtype")


def data_metadata(config: Config) -> dict[str, str]:
    """A data file's metadata: the resolved config (sorted JSON) and the task's name."""
    return {"config": json.dumps(config.to_dict(), sort_keys=True), "format": "selectlens-data-1",
            "task": config.data.task}


def load_prediction_input(path: str | Path) -> tuple[dict[str, torch.Tensor], Config | None]:
    """``(tensors, config or None)`` of any safetensors file, for ``predict``: the task then takes its
    tokens (or builds them, e.g. from ``x`` and ``y``). A ``tokens`` tensor must be a non-empty
    floating ``[B, T, F]``; ``target`` floating; the config metadata is optional."""
    p = Path(path)
    tensors, meta = parse_safetensors(read_input_file(p, DataFileError, "data file"), p, DataFileError)
    tokens = tensors.get("tokens")
    if tokens is not None and (tokens.dim() != 3 or not tokens.is_floating_point() or tokens.shape[0] == 0):
        raise DataFileError(f"data file {p}: 'tokens' must be a non-empty floating tensor [B, T, F], "
                            f"got {str(tokens.dtype).removeprefix('torch.')} {list(tokens.shape)}")
    target = tensors.get("target")
    if target is not None and not target.is_floating_point():
        raise DataFileError(f"data file {p}: 'target' is not floating point")
    try:
        config = config_from_dict(json.loads(meta["config"]), stored=True) if "config" in meta else None
    except (json.JSONDecodeError, ConfigError):
        config = None  # predict does not need it
    return tensors, config


def load_task_batch(path: str | Path) -> tuple[Batch, Config]:
    """Read a file written by :func:`save_task_batch`; every problem is one :class:`DataFileError` line.
    The config in the metadata says which task (and so which batch type and tensor shapes) it is."""
    p = Path(path)
    tensors, meta = parse_safetensors(read_input_file(p, DataFileError, "data file"), p, DataFileError)
    try:
        config = config_from_dict(json.loads(meta["config"]), stored=True)
    except KeyError:
        raise DataFileError(f"data file {p} has no config metadata") from None
    except (json.JSONDecodeError, ConfigError) as e:
        raise DataFileError(f"data file {p} has bad config metadata: {e}") from None
    task = make_task(config, device="cpu")
    spec = task.tensor_spec()
    missing = [k for k in spec if k not in tensors]
    if missing:
        raise DataFileError(f"data file {p} lacks tensor {missing[0]!r}")
    tokens = tensors["tokens"]
    B = tokens.shape[0] if tokens.dim() == 3 else -1
    for name, (shape, dtype) in spec.items():
        t = tensors[name]
        if tuple(t.shape) != (B, *shape):
            raise DataFileError(f"data file {p}: tensor {name!r} has shape {list(t.shape)}, expected {[B, *shape]}")
        if dtype == torch.bool and t.dtype != torch.bool:
            raise DataFileError(f"data file {p}: tensor {name!r} is not boolean")
        if dtype.is_floating_point and not t.is_floating_point():
            raise DataFileError(f"data file {p}: tensor {name!r} is not floating point")
    return task.Batch(**{k: tensors[k] for k in spec}), config
