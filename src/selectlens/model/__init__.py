"""The hookable GPT-2 and its checkpoint I/O."""

from selectlens.model.checkpoint import (
    CheckpointError, import_legacy_state_dict, load_model, save_model,
)
from selectlens.model.gpt2 import ModelOutput, ModelSpec, SelectionTransformer
from selectlens.model.hooks import HookedModule, HookPoint, capture_module_outputs

__all__ = [
    "CheckpointError", "HookPoint", "HookedModule", "ModelOutput", "ModelSpec", "SelectionTransformer",
    "capture_module_outputs", "import_legacy_state_dict", "load_model", "save_model",
]
