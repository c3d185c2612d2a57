"""``selectlens bench datagen``: sequences/s of SelectLens's batched generator
against the per-sequence scikit-learn reference, measured in the same run."""

from __future__ import annotations

import statistics
import time

import torch

from selectlens.benchmarks import sync
from selectlens.benchmarks.reference import reference_sequences
from selectlens.config import Config
from selectlens.tasks import make_generator, make_task


def bench_datagen(
    config: Config,
    *,
    device: str | None = None,
    sequences: int | None = None,
    reference_sequences_count: int | None = None,
    repeats: int = 5,
) -> dict[str, float | int | str]:
    """Time one epoch of SelectLens data (median of ``repeats``) and the reference on a subset.

    The reference fits one scikit-learn model per sequence and candidate, so its
    rate does not depend on how many sequences it is timed on; a subset keeps
    the benchmark short.
    """
    dev = torch.device(device or config.device)
    n = sequences or config.data.train_samp_per_class
    n_ref = reference_sequences_count or (1000 if not config.data.classification else 140)
    task = make_task(config, device=dev)
    gen = make_generator(config.seed, dev)
    task.sample(min(n, 256), gen)  # warm-up
    times = []
    for _ in range(repeats):
        sync(dev)
        t0 = time.perf_counter()
        task.sample(n, gen)
        sync(dev)
        times.append(time.perf_counter() - t0)
    ours = n / statistics.median(times)
    t0 = time.perf_counter()
    ref = reference_sequences(config.data, n_ref, seed=config.seed)
    t_ref = time.perf_counter() - t0
    reference = ref["tokens"].shape[0] / t_ref
    return {
        "task": getattr(task, "label", task.name),
        "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "sequences": n,
        "reference_sequences": int(ref["tokens"].shape[0]),
        "torch_threads": torch.get_num_threads(),
        "ours_seq_per_s": ours,
        "reference_seq_per_s": reference,
        "ratio": ours / reference,
    }
