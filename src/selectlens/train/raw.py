"""Training objective and per-epoch test losses for the raw-data (interleaved) tasks.

The model reads out at every x-token: ``model(tokens).raw[:, 0::2]`` is ``[B, N]``, the
prediction of y_i from the i earlier pairs. The loss is the squared error averaged over
every x position (``training.loss_positions: all``, Garg et al.) or at the last one only.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from selectlens.model.gpt2 import SelectionTransformer


def positions_used(values: Tensor, positions: str) -> Tensor:
    """``[B, N]`` per-position values → the ``[B, n]`` columns the loss uses (all, or the last)."""
    return values if positions == "all" else values[:, -1:]


def raw_batch_loss(model: SelectionTransformer, tokens: Tensor, target: Tensor, positions: str) -> Tensor:
    """Mean squared error of the x-position read-outs of ``tokens [B, 2N, d+1]`` against ``target [B, N]``."""
    pred = model(tokens).raw[:, 0::2]  # [B, N]
    return positions_used((pred - target) ** 2, positions).mean()


@torch.no_grad()
def evaluate_raw_split(
    model: SelectionTransformer, batch: Any, baselines: dict[str, Callable[[Any], Tensor]], positions: str
) -> dict[str, Any]:
    """Test loss of the model and of every raw baseline on the same sequences (a ``RawBatch``).

    ``test_loss`` and ``baselines`` average the squared error over the positions the training
    loss uses; ``test_loss_last`` is the model's error at the last x position.
    """
    err = (model.predict_x_positions(batch.tokens) - batch.target) ** 2  # [B, N]
    out = {
        "test_loss": float(positions_used(err, positions).mean()),
        "test_loss_last": float(err[:, -1].mean()),
    }
    out["baselines"] = {
        name: float(positions_used((fn(batch) - batch.target) ** 2, positions).mean()) for name, fn in baselines.items()
    }
    return out
