"""Task diversity (docs/design.md#task-diversity; Raventós et al. 2023): in-context regression whose
training weights come from a finite pool.

M weight vectors ``w_1 … w_M ~ N(0, I_d)`` are drawn once from ``data.pool_seed``; each training
sequence uses one of them, uniformly; ``y = xᵀw/√d + σz`` with one noise level σ. The held-out set
is half ``pool`` sequences (w from the pool, the training prior) and half ``fresh`` ones
(w ~ N(0, I_d)), so eval tells memorising the pool from learning regression. Layouts and read-out
as the other raw-data tasks (:mod:`selectlens.tasks.raw`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import Tensor

from selectlens.tasks.protocol import make_generator
from selectlens.tasks.raw import RawBatch, RawData, RawTask


class TaskDiversityData(RawData):
    """``data`` keys of task diversity: the pool and the one noise level."""

    task: str = "task_diversity"
    d_d: int = Field(8, gt=0, description="Input dimension d.")
    N: int = Field(16, ge=2, description="Pairs (x, y) per sequence.")
    pool_size: int = Field(64, ge=1, le=1 << 20, description="M: weight vectors in the training pool.")
    pool_seed: int = Field(0, ge=0, description="Seed of the pool (fixed across runs with different seeds).")
    noise_levels: list[float] = Field([0.5], min_length=1, max_length=1, description="The noise sd σ (one level).")


@dataclass
class TaskDiversityBatch(RawBatch):
    from_pool: Tensor  # [B] bool: w is a pool vector (else a fresh draw)


class TaskDiversityTask(RawTask):
    """Linear regression with weights from a pool of M vectors; eval on pool and fresh weights."""

    name = "task_diversity"
    Data = TaskDiversityData
    Batch = TaskDiversityBatch

    def __init__(self, data: TaskDiversityData, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__(data, device=device, dtype=dtype)
        pool = torch.randn(data.pool_size, data.d_d, generator=make_generator(data.pool_seed), dtype=torch.float64)
        self.pool = pool.to(device=self.device, dtype=dtype)  # [M, d]

    def _sample(self, batch_size: int, generator: torch.Generator, fresh: Tensor) -> TaskDiversityBatch:
        B, N, d = batch_size, self.data.N, self.data.d_d
        kw = {"device": self.device, "dtype": self.dtype}
        x = torch.randn(B, N, d, generator=generator, **kw)
        idx = torch.randint(self.data.pool_size, (B,), generator=generator, device=self.device)
        w = torch.where(fresh.unsqueeze(-1), torch.randn(B, d, generator=generator, **kw), self.pool[idx])
        z = torch.randn(B, N, generator=generator, **kw)
        sigma = torch.full((B,), self.noise_levels[0], **kw)
        raw = self.build(x, w, z, sigma, torch.ones(B, dtype=torch.bool, device=self.device))
        return TaskDiversityBatch(**raw.as_dict(), from_pool=~fresh)

    def sample(self, batch_size: int, generator: torch.Generator) -> TaskDiversityBatch:
        """Training sequences: every w from the pool."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        return self._sample(batch_size, generator, torch.zeros(batch_size, dtype=torch.bool, device=self.device))

    def sample_for_eval(self, batch_size: int, generator: torch.Generator) -> TaskDiversityBatch:
        """Held-out sequences: the first half from the pool, the rest fresh."""
        fresh = torch.arange(batch_size, device=self.device) >= batch_size // 2
        return self._sample(batch_size, generator, fresh)

    def groups(self, batch: TaskDiversityBatch) -> dict[str, Tensor]:
        out = {"all": torch.ones_like(batch.from_pool)}
        for name, mask in (("pool", batch.from_pool), ("fresh", ~batch.from_pool)):
            if bool(mask.any()):
                out[name] = mask
        return out

    def paired_batches(self, n: int, generator: torch.Generator):
        return None  # one noise level: no σ to patch
