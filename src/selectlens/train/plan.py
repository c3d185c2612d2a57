"""How each epoch's fresh sequences are split and batched (read by the loop and the distributed launcher)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from selectlens.config import Config


@dataclass(frozen=True)
class EpochPlan:
    """How each epoch's fresh sequences are split and batched."""

    n_seq: int  # sequences drawn per epoch
    n_train: int  # of which train; the rest are the epoch's test split
    batch_size: int
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def from_config(cls, config: Config) -> "EpochPlan":
        n_seq = config.data.train_samp_per_class
        n_train = max(1, min(n_seq - 1, int(round(config.data.train_prop * n_seq))))
        bs = config.training.batch_size
        steps = math.ceil(n_train / bs)
        return cls(n_seq, n_train, bs, steps, steps * config.training.epochs)

    def sequences_before(self, step: int) -> int:
        """Training sequences drawn before optimiser step ``step`` (0-based): whole epochs, then full batches."""
        epochs, rest = divmod(step, self.steps_per_epoch)
        return epochs * self.n_train + rest * self.batch_size
