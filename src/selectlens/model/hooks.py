"""Hook points in the TransformerLens style, without the dependency.

A :class:`HookPoint` is an identity module wrapped around an activation; its
name is its module path (``blocks.0.attn.hook_pattern``), so there is no name
registry to keep in sync. Hooks are temporary: :meth:`HookedModule.hooks`
removes them in ``finally``, also when a hook function raises.

The semantics follow TransformerLens: a hook function is called as
``fn(activation, hook=hook_point)`` and may return a replacement tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Union

import torch
from torch import Tensor, nn

HookFn = Callable[..., Union[Tensor, None]]
NameFilter = Union[str, Sequence[str], Callable[[str], bool], None]


class HookPoint(nn.Module):
    """Identity module marking an activation that hooks can read or replace."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""

    def forward(self, x: Tensor) -> Tensor:
        return x

    def extra_repr(self) -> str:
        return self.name


def _matcher(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda _: True
    if isinstance(names, str):
        return lambda n: n == names
    if callable(names):
        return names
    wanted = set(names)
    return lambda n: n in wanted


class HookedModule(nn.Module):
    """Base class giving a module ``hook_dict``, ``hooks``, ``run_with_hooks`` and ``run_with_cache``."""

    def setup_hooks(self) -> None:
        """Name every HookPoint by its module path; call at the end of ``__init__``."""
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    @property
    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    @contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[NameFilter, HookFn]] = ()) -> Iterator["HookedModule"]:
        """Attach forward hooks for the duration of a ``with`` block; always removed on exit."""
        handles = []
        try:
            for names, fn in fwd_hooks:
                match = _matcher(names)
                found = False
                for name, hp in self.hook_dict.items():
                    if match(name):
                        found = True
                        handles.append(hp.register_forward_hook(_wrap(fn)))
                if not found and isinstance(names, str):
                    raise KeyError(f"no hook point named {names!r}")
            yield self
        finally:
            for h in handles:
                h.remove()

    def run_with_hooks(self, *args: Any, fwd_hooks: Sequence[tuple[NameFilter, HookFn]] = (), **kwargs: Any) -> Any:
        """Run ``forward`` with temporary hooks."""
        with self.hooks(fwd_hooks):
            return self(*args, **kwargs)

    def run_with_cache(
        self, *args: Any, names_filter: NameFilter = None, detach: bool = True, **kwargs: Any
    ) -> tuple[Any, dict[str, Tensor]]:
        """Run ``forward`` and return ``(output, cache)``, the cache mapping hook names to activations."""
        cache: dict[str, Tensor] = {}

        def save(x: Tensor, hook: HookPoint) -> None:
            cache[hook.name] = x.detach() if detach else x

        match = _matcher(names_filter)
        with self.hooks([(match, save)]):
            out = self(*args, **kwargs)
        return out, cache


def _wrap(fn: HookFn) -> Callable[[nn.Module, tuple, Tensor], Tensor | None]:
    def hook(module: nn.Module, _inputs: tuple, output: Tensor) -> Tensor | None:
        return fn(output, hook=module)

    return hook


def capture_module_outputs(model: nn.Module, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Forward hook on *every* module; returns ``(output, {module_path: output})``. Hooks are always removed."""
    flat: dict[str, Any] = {}
    handles = []
    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: flat.__setitem__(name or "<root>", o)))
        with torch.no_grad():
            out = model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    return out, flat
