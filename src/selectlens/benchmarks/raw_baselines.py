"""``selectlens bench baselines``: the exact Bayes noise mixture for every prefix
(``baselines.raw.bayes_mixture``, batched) against a per-sequence, per-prefix numpy loop,
timed in the same run on the same sequences, with the largest disagreement between them.

The reference is the direct computation a reader would write: for each sequence, each
prefix n and each noise level, form ``A = XᵀX + dσ²I``, solve for the ridge weights and
take ``slogdet(I + XᵀX/(dσ²))`` (docs/design.md#bayes-mixture). Its cost per sequence does not depend on how
many sequences it runs on, so it is timed on a subset to keep the benchmark short.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import torch

from selectlens.baselines.raw import bayes_mixture
from selectlens.benchmarks import sync
from selectlens.tasks import make_generator
from selectlens.tasks.raw import MixedNoiseRegressionTask


def reference_bayes_mixture(x: np.ndarray, y: np.ndarray, sigmas: list[float], probs: list[float]) -> np.ndarray:
    """``[B, N]`` Bayes-mixture predictions, one sequence and one prefix at a time (float64 numpy)."""
    B, N, d = x.shape
    log_prior = np.log(np.asarray(probs, dtype=np.float64))
    out = np.zeros((B, N))
    for b in range(B):
        for n in range(1, N):
            X, Y, xq = x[b, :n], y[b, :n], x[b, n]
            gram, rhs = X.T @ X, X.T @ Y
            log_p, means = np.empty(len(sigmas)), np.empty(len(sigmas))
            for k, s in enumerate(sigmas):
                lam = d * s * s
                beta = np.linalg.solve(gram + lam * np.eye(d), rhs)
                means[k] = xq @ beta
                logdet = np.linalg.slogdet(np.eye(d) + gram / lam)[1]
                log_p[k] = -(Y @ Y - rhs @ beta) / (2 * s * s) - 0.5 * (n * math.log(s * s) + logdet)
            post = np.exp(log_p + log_prior - (log_p + log_prior).max())
            out[b, n] = post @ means / post.sum()
    return out


def bench_baselines(
    *,
    d: int = 5,
    N: int = 20,
    sigmas: list[float] | None = None,
    probs: list[float] | None = None,
    sequences: int = 4096,
    reference_sequences: int = 200,
    device: str = "cpu",
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, float | int | str | list[float]]:
    """Sequences/s of the batched Bayes mixture (median of ``repeats``) and of the numpy reference."""
    sigmas = sigmas or [0.1, 0.5]
    probs = probs or [1.0 / len(sigmas)] * len(sigmas)
    dev = torch.device(device)
    data = MixedNoiseRegressionTask.Data(task="mixed_noise_regression", N=N, d_d=d, noise_levels=sigmas, noise_probs=probs)
    batch = MixedNoiseRegressionTask(data, device=dev).sample(sequences, make_generator(seed, dev))
    x, y = batch.x, batch.y
    bayes_mixture(x[:64], y[:64], sigmas, probs)  # warm-up
    times = []
    for _ in range(repeats):
        sync(dev)
        t0 = time.perf_counter()
        ours = bayes_mixture(x, y, sigmas, probs)[0]
        sync(dev)
        times.append(time.perf_counter() - t0)
    n_ref = min(reference_sequences, sequences)
    xr, yr = x[:n_ref].double().cpu().numpy(), y[:n_ref].double().cpu().numpy()
    t0 = time.perf_counter()
    ref = reference_bayes_mixture(xr, yr, sigmas, probs)
    t_ref = time.perf_counter() - t0
    ours_rate = sequences / statistics.median(times)
    ref_rate = n_ref / t_ref
    return {
        "task": "mixed_noise_regression",
        "d": d,
        "N": N,
        "noise_levels": list(sigmas),
        "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "torch_threads": torch.get_num_threads(),
        "sequences": sequences,
        "reference_sequences": n_ref,
        "ours_seq_per_s": ours_rate,
        "reference_seq_per_s": ref_rate,
        "ratio": ours_rate / ref_rate,
        "max_abs_diff": float(np.abs(ours[:n_ref].cpu().numpy() - ref).max()),
    }
