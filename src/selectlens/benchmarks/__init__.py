"""Benchmarks: SelectLens against reference implementations of the original pipeline, in one run."""

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
