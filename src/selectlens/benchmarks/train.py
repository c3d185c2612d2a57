"""``selectlens bench train``: sequences/s of a full epoch (data generation +
training steps), SelectLens on the default config against the original
pipeline's pattern, in the same run.

The reference generates each sequence with scikit-learn in a Python loop and
trains Hugging Face ``GPT2Model`` (with its full token table) at batch 32, as
the original did. Its cost per sequence does not depend on the epoch size, so
it is timed on a slice of an epoch to keep the benchmark short.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from selectlens.benchmarks import sync
from selectlens.benchmarks.reference import original_model, reference_sequences
from selectlens.config import Config, load_config
from selectlens.tasks import make_generator, make_task
from selectlens.train.loop import batch_loss, build_model


def ours_epoch_seconds(config: Config, device: torch.device, epochs: int = 2) -> float:
    """Median wall time of one SelectLens epoch: fresh data + Adam steps over the training split."""
    task = make_task(config, device=device)
    gen = make_generator(config.seed, device)
    model = build_model(config).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.training.lr)
    n = config.data.train_samp_per_class
    n_train = int(round(config.data.train_prop * n))
    bs = config.training.batch_size

    def epoch() -> float:
        sync(device)
        t0 = time.perf_counter()
        batch = task.sample(n, gen)
        for i in range(0, n_train, bs):
            loss = batch_loss(model, batch.tokens[i : i + bs], batch.target[i : i + bs], config.training.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        return time.perf_counter() - t0

    epoch()  # warm-up
    return statistics.median(epoch() for _ in range(epochs))


def reference_seconds(config: Config, n_sequences: int, batch_size: int = 32) -> float:
    """Wall time of the original pattern on ``n_sequences``: sklearn data + HF GPT-2 at batch 32, CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = original_model(config.data.n_features, config.data.N, config.model.n_embd,
                               config.model.n_layer, config.model.n_head).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.training.lr)
    t0 = time.perf_counter()
    data = reference_sequences(config.data, n_sequences, seed=config.seed)
    n_train = int(round(config.data.train_prop * data["tokens"].shape[0]))
    for i in range(0, n_train, batch_size):
        pred = model(data["tokens"][i : i + batch_size])
        loss = ((pred - data["target"][i : i + batch_size]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def bench_train(config: Config | None = None, *, device: str = "cpu", reference_sequences_count: int = 1000) -> dict:
    cfg = config or load_config("default")
    dev = torch.device(device)
    ours_s = ours_epoch_seconds(cfg, dev)
    n = cfg.data.train_samp_per_class
    ref_s = reference_seconds(cfg, reference_sequences_count)
    n_ref = int(reference_sequences_count // len(cfg.data.data_alphas) * len(cfg.data.data_alphas))
    ours = n / ours_s
    ref = n_ref / ref_s
    return {
        "config": "default" if config is None else "custom",
        "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "sequences_per_epoch": n,
        "batch_size": cfg.training.batch_size,
        "reference_sequences": n_ref,
        "reference_batch_size": 32,
        "ours_epoch_s": ours_s,
        "ours_seq_per_s": ours,
        "reference_seq_per_s": ref,
        "ratio": ours / ref if ref > 0 and math.isfinite(ref) else float("nan"),
    }
