"""Model weights on disk: safetensors (with the :class:`ModelSpec` as metadata),
and import of the original project's ``.pt``/``.pth`` state dicts.

Nothing here unpickles arbitrary objects: weights are safetensors, and legacy
files go through ``torch.load(weights_only=True)``. Every problem with a file
is one :class:`CheckpointError` line naming the file or tensor.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import torch
from torch import Tensor

from selectlens.errors import InputError
from selectlens.fileio import atomic_write, parse_safetensors, read_input_file, safetensors_bytes
from selectlens.model.gpt2 import ModelSpec, SelectionTransformer

MODEL_FORMAT = "selectlens-model-1"


class CheckpointError(InputError):
    """A checkpoint that cannot be read, in one line."""


def model_bytes(model: SelectionTransformer, extra_metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors encoding of ``model``'s weights, with its spec in the metadata."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": MODEL_FORMAT, "spec": json.dumps(model.spec.to_dict(), sort_keys=True), **(extra_metadata or {})}
    return safetensors_bytes(tensors, meta)  # equal weights give equal bytes, in any process


def save_model(model: SelectionTransformer, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Write ``model`` to ``path`` (a ``.safetensors`` file) atomically."""
    p = Path(path)
    atomic_write(p, model_bytes(model, extra_metadata))
    return p


def read_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, or a one-line :class:`CheckpointError`."""
    return parse_safetensors(read_input_file(path, CheckpointError, "checkpoint"), path, CheckpointError)


def load_model(path: str | Path, *, device: str | torch.device = "cpu", spec: ModelSpec | None = None) -> SelectionTransformer:
    """Build a model from a ``.safetensors`` file written by :func:`save_model`."""
    tensors, meta = read_safetensors(path)
    if spec is None:
        try:
            spec = ModelSpec(**json.loads(meta["spec"]))
        except KeyError:
            raise CheckpointError(f"{path} has no model spec in its metadata (not a SelectLens model file)") from None
        except (TypeError, ValueError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path} has a bad model spec: {str(e)[:80]}") from None
    model = SelectionTransformer(spec)
    load_weights(model, tensors, source=str(path))
    return model.to(device).eval()


def load_weights(model: SelectionTransformer, tensors: dict[str, Tensor], *, source: str) -> None:
    """Copy ``tensors`` into ``model``; a missing, unexpected or mis-shaped tensor is an error naming it."""
    own = model.state_dict()
    for name, target in own.items():
        if name not in tensors:
            raise CheckpointError(f"{source}: missing tensor {name!r}")
        got = tensors[name]
        if not isinstance(got, Tensor):
            raise CheckpointError(f"{source}: entry {name!r} is not a tensor")
        if tuple(got.shape) != tuple(target.shape):
            raise CheckpointError(f"{source}: tensor {name!r} has shape {list(got.shape)}, expected {list(target.shape)}")
        if not got.is_floating_point():
            raise CheckpointError(f"{source}: tensor {name!r} is not floating point")
    extra = sorted(set(tensors) - set(own))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor {extra[0]!r}")
    with torch.no_grad():
        for name, target in own.items():
            target.copy_(tensors[name].to(target.dtype))


# ---------------------------------------------------------------------------
# The original project's checkpoints (Hugging Face GPT2Model inside a wrapper)

_OPTIONAL_LEGACY = ("_backbone.wte.weight",)


def _legacy_names(n_layer: int) -> dict[str, tuple[str, bool]]:
    """Our parameter name → (original name, stored transposed as a Conv1D)."""
    names = {
        "read_in.weight": ("_read_in.weight", False),
        "read_in.bias": ("_read_in.bias", False),
        "pos_embed.weight": ("_backbone.wpe.weight", False),
        "ln_final.weight": ("_backbone.ln_f.weight", False),
        "ln_final.bias": ("_backbone.ln_f.bias", False),
        "read_out.weight": ("_read_out.weight", False),
        "read_out.bias": ("_read_out.bias", False),
    }
    for l in range(n_layer):
        h, b = f"_backbone.h.{l}", f"blocks.{l}"
        names.update({
            f"{b}.ln1.weight": (f"{h}.ln_1.weight", False),
            f"{b}.ln1.bias": (f"{h}.ln_1.bias", False),
            f"{b}.attn.qkv.weight": (f"{h}.attn.c_attn.weight", True),
            f"{b}.attn.qkv.bias": (f"{h}.attn.c_attn.bias", False),
            f"{b}.attn.out.weight": (f"{h}.attn.c_proj.weight", True),
            f"{b}.attn.out.bias": (f"{h}.attn.c_proj.bias", False),
            f"{b}.ln2.weight": (f"{h}.ln_2.weight", False),
            f"{b}.ln2.bias": (f"{h}.ln_2.bias", False),
            f"{b}.mlp.fc_in.weight": (f"{h}.mlp.c_fc.weight", True),
            f"{b}.mlp.fc_in.bias": (f"{h}.mlp.c_fc.bias", False),
            f"{b}.mlp.fc_out.weight": (f"{h}.mlp.c_proj.weight", True),
            f"{b}.mlp.fc_out.bias": (f"{h}.mlp.c_proj.bias", False),
        })
    return names


def read_torch_file(path: str | Path) -> object:
    """``torch.load(weights_only=True)`` with one-line errors; never runs pickled code."""
    p = Path(path)
    raw = read_input_file(p, CheckpointError, "checkpoint")
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "Unsupported" in msg or "global" in msg.lower():
            raise CheckpointError(
                f"refused to load {p}: it contains objects other than tensors (loading them could run code)"
            ) from None
        raise CheckpointError(f"{p} is not a valid torch checkpoint ({msg.splitlines()[0][:80]})") from None
    except (RuntimeError, EOFError, ValueError, OSError, KeyError, IndexError, AttributeError, TypeError, ImportError) as e:
        first = (str(e).splitlines() or [e.__class__.__name__])[0][:80]
        raise CheckpointError(f"{p} is not a valid torch checkpoint ({first})") from None


def import_legacy_state_dict(path: str | Path, spec: ModelSpec) -> SelectionTransformer:
    """Load an original-project state dict (HF ``GPT2Model`` wrapped with ``_read_in``/``_read_out``).

    Accepts files with or without the unused ``wte`` table and with or without
    the ``attn.bias``/``attn.masked_bias`` buffers of older Transformers versions.
    """
    state = read_torch_file(path)
    if isinstance(state, dict) and "model_state_dict" in state and isinstance(state["model_state_dict"], dict):
        state = state["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path} does not hold a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel prefix
    tensors: dict[str, Tensor] = {}
    for ours, (theirs, transposed) in _legacy_names(spec.n_layer).items():
        if theirs not in state:
            raise CheckpointError(f"{path}: missing tensor {theirs!r}")
        t = state[theirs]
        if not isinstance(t, Tensor):
            raise CheckpointError(f"{path}: entry {theirs!r} is not a tensor")
        tensors[ours] = t.t() if transposed and t.dim() == 2 else t
    known = {theirs for theirs, _ in _legacy_names(spec.n_layer).values()} | set(_OPTIONAL_LEGACY)
    for k in state:
        if k in known or k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue
        raise CheckpointError(f"{path}: unexpected tensor {k!r} (does the config's n_layer match?)")
    model = SelectionTransformer(spec)
    try:
        load_weights(model, tensors, source=str(path))
    except CheckpointError as e:
        # Name the tensor as the original file calls it.
        msg = str(e)
        for ours, (theirs, _) in _legacy_names(spec.n_layer).items():
            msg = msg.replace(f"'{ours}'", f"'{theirs}'")
        raise CheckpointError(msg) from None
    return model.eval()
