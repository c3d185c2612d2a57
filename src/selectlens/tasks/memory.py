"""Memory estimates made before allocating, so that an oversized request is refused in one line
(estimate vs. what is available) instead of dying in ``torch.randn`` or running silently for minutes.

The estimates count the big tensors (generated sequences with their ground truth, the model's
activations, the attention mask) times a safety factor for temporaries; they are meant to be
right within a small factor, which is all a refusal needs.
"""

from __future__ import annotations

import os

from selectlens.config import Config
from selectlens.errors import InputError

GENERATION_FACTOR = 3  # temporaries while sampling (noise, fits, the concatenated tokens)
TRAIN_FACTOR = 3  # activations kept for backward, their gradients, Adam's two moments
PREDICT_CHUNK = 8192  # sequences per forward in predict_in_chunks / predict_x_positions


class ResourceError(InputError):
    """A request whose memory estimate exceeds what this machine has available."""


def itemsize(config: Config) -> int:
    return 8 if config.dtype == "float64" else 4


def sequence_bytes(config: Config) -> int:
    """Bytes of one generated sequence with its ground truth (what a data file stores per sequence),
    plus the task's fitting workspace: from the task's tensor spec."""
    from selectlens.tasks.protocol import make_task

    return make_task(config, device="cpu").sequence_bytes()


def generation_bytes(config: Config, sequences: int) -> int:
    """Peak bytes while sampling ``sequences`` sequences at once."""
    return GENERATION_FACTOR * sequences * sequence_bytes(config)


def activation_bytes(config: Config, batch: int, *, backward: bool = False, cached: bool = False) -> int:
    """Bytes of one forward pass over ``batch`` sequences, plus the ``[T, T]`` attention mask.

    A layer holds about 16 residual-width tensors ``[B, T, n_embd]`` (layer norms, q/k/v, the
    4x MLP) and the attention scores and pattern ``[B, n_head, T, T]``. Without grad only one
    layer is alive at a time (about half its tensors); for ``backward`` (times
    :data:`TRAIN_FACTOR`, the gradients) or ``cached`` (hooks keep everything) all layers are.
    """
    T, E, H, L = config.data.n_positions, config.model.n_embd, config.model.n_head, config.model.n_layer
    layer = 16 * T * E + 2 * H * T * T
    if backward:
        per_seq = TRAIN_FACTOR * L * layer
    elif cached:
        per_seq = L * layer
    else:
        per_seq = layer // 2 + H * T * T
    return batch * per_seq * itemsize(config) + T * T


def train_bytes(config: Config) -> int:
    """Peak bytes of a training epoch: its fresh sequences, a training step, the test-split forward."""
    n = config.data.train_samp_per_class
    n_test = max(1, n - int(round(config.data.train_prop * n)))
    step = activation_bytes(config, config.training.batch_size, backward=True)
    return generation_bytes(config, n) + max(step, activation_bytes(config, min(n_test, PREDICT_CHUNK)))


def eval_bytes(config: Config, sequences: int) -> int:
    """Peak bytes of ``eval``: the held-out set, the baselines' predictions, a forward chunk."""
    return 2 * generation_bytes(config, sequences) + activation_bytes(config, min(sequences, PREDICT_CHUNK))


def interpret_bytes(config: Config, sequences: int) -> int:
    """Peak bytes of ``interpret``: a cached forward over every analysed sequence (all hooks kept,
    several analyses at once) beside the held-out set."""
    return generation_bytes(config, sequences) + 4 * activation_bytes(config, sequences, cached=True)


def available_bytes(device: str = "cpu") -> int | None:
    """Memory available for a new allocation: free GPU memory for a CUDA device, else
    ``MemAvailable`` from /proc/meminfo (None where neither can be read)."""
    if str(device).startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def check_disk(path, need: int, what: str) -> None:
    """Refuse (one line) when the file system of ``path`` has less than ``need`` bytes free."""
    import shutil
    from pathlib import Path

    probe = Path(path).resolve().parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise ResourceError(f"{what} needs about {human(need)} of disk, {human(free)} free in {probe}")


def check_memory(need: int, what: str, device: str = "cpu", hint: str = "") -> None:
    """Refuse (one :class:`ResourceError` line) when ``need`` bytes exceed what ``device`` has available."""
    have = available_bytes(device)
    if have is not None and need > have:
        raise ResourceError(f"{what} needs about {human(need)} of memory, {human(have)} available"
                            + (f"; {hint}" if hint else ""))
