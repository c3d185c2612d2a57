"""Data-parallel training with ``torch.distributed`` (launched by ``torchrun``).

The launcher's environment switches it on (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, as nanoGPT does): gloo on CPU, NCCL on CUDA, one process per
rank. Every rank draws the whole epoch from the run's seed streams (the same
data and shuffle generators, so the same sequences and order) and takes its
contiguous slice of each global batch; data generation costs ~1/1000 of a step,
so this is simpler than a sampler and makes the run independent of the number
of ranks except for float summation order. Gradients are averaged by
``DistributedDataParallel``; each rank's loss is scaled by ``P·b_r/B`` so the
average equals the gradient of the mean over the global batch even when the
batch does not split evenly. Rank 0 alone writes the run directory.

A rank that dies takes the job down: ``torchrun`` stops the other ranks when
one exits, and every collective has a timeout (``SELECTLENS_DIST_TIMEOUT_S``,
default 300 s), so nothing waits forever.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

from selectlens.config import ConfigError
from selectlens.errors import SelectLensError
from selectlens.train.plan import EpochPlan


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job; ``world == 1`` means not distributed."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_context() -> DistContext:
    """The context ``torchrun`` describes in the environment (single process when unset)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    return DistContext(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(ctx: DistContext, device: torch.device) -> torch.device:
    """CUDA ranks each take their local GPU; CPU ranks share the CPU."""
    if ctx.enabled and device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        return torch.device("cuda", ctx.local_rank)
    return device


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """Join the job's process group (gloo on CPU, NCCL on CUDA) with a timeout on every collective."""
    import torch.distributed as dist

    if not ctx.enabled or dist.is_initialized():
        return
    timeout = datetime.timedelta(seconds=float(os.environ.get("SELECTLENS_DIST_TIMEOUT_S", "300")))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=timeout)


def destroy_process_group(ctx: DistContext) -> None:
    """Leave the job together: every rank waits for the others (rank 0 may still be writing its last
    checkpoint) before the group is torn down, so no rank closes its connections under a peer."""
    import torch.distributed as dist

    if ctx.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def check_batches_split(ctx: DistContext, n_train: int, batch_size: int) -> None:
    """Every global batch (the last one too) must give each rank at least one sequence."""
    last = n_train % batch_size or batch_size
    if ctx.enabled and min(batch_size, last) < ctx.world:
        raise ConfigError(f"training.batch_size {batch_size} (last batch of an epoch: {last}) cannot be split over "
                          f"{ctx.world} ranks; use a batch of at least {ctx.world} sequences")


def check_launch(config, nproc: int) -> None:
    """Refuse, before starting any process, a job whose batches cannot be split or that lacks GPUs."""
    plan = EpochPlan.from_config(config)
    check_batches_split(DistContext(0, nproc, 0), plan.n_train, plan.batch_size)
    if torch.device(config.device).type == "cuda" and nproc > torch.cuda.device_count():
        raise ConfigError(f"--nproc {nproc} needs {nproc} GPUs for device {config.device}; "
                          f"{torch.cuda.device_count()} visible")


def rank_slice(ctx: DistContext, idx: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch's indices ``[B]`` → ``[b_r]``."""
    if not ctx.enabled:
        return idx
    return idx.tensor_split(ctx.world)[ctx.rank]


def wrap_model(ctx: DistContext, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module the training forward goes through: DDP around ``model`` when distributed."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def global_mean(ctx: DistContext, value: torch.Tensor) -> torch.Tensor:
    """Sum over ranks divided by the world size (of already ``P·b_r/B``-scaled losses: the global mean)."""
    if not ctx.enabled:
        return value
    import torch.distributed as dist

    out = value.detach().clone()
    dist.all_reduce(out)
    return out / ctx.world


def agree(ctx: DistContext, flag: bool) -> bool:
    """Rank 0's decision (e.g. "out of time"), the same on every rank."""
    if not ctx.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return bool(t.item())


class LaunchError(SelectLensError):
    """``torchrun`` ended with a failed rank."""


def launch(nproc: int, train_args: list[str]) -> None:
    """Run ``selectlens train ARGS`` on ``nproc`` local processes under ``torchrun`` and wait.

    ``torchrun`` stops every rank when one fails; its exit code is turned into one error line.
    """
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "selectlens.cli", "train", *train_args]
    rc = subprocess.run(cmd).returncode
    if rc != 0:
        raise LaunchError(f"distributed training failed: a rank exited (torchrun exit code {rc}; the rank's error is "
                          f"above); the run keeps its last checkpoint, continue it with --resume")
