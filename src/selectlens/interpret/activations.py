"""Activations: the hook-point cache (TransformerLens names) and a capture of every module's output."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from selectlens.model.gpt2 import SelectionTransformer
from selectlens.model.hooks import NameFilter, capture_module_outputs


@torch.no_grad()
def activation_cache(model: SelectionTransformer, tokens: Tensor, names_filter: NameFilter = None) -> dict[str, Tensor]:
    """``run_with_cache`` without gradients: hook name → activation."""
    return model.run_with_cache(tokens, names_filter=names_filter)[1]


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b.c": v}`` → ``{"a": {"b": {"c": {"val": v}}}}``, the notebook's hierarchical layout."""
    root: dict[str, Any] = {}
    for key, val in flat.items():
        node = root
        for part in key.split("."):
            node = node.setdefault(part, {})
        node["val"] = val
    return root


def module_activations(model: SelectionTransformer, tokens: Tensor) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every module's output, flat (by module path) and nested; the hooks are always removed."""
    _, flat = capture_module_outputs(model, tokens)
    return flat, nest(flat)
