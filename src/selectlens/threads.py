"""The CPU thread policy: how many OpenMP threads torch uses, and how they wait for each other.

torch's CPU kernels run on an OpenMP team (libgomp in the pip wheels). By default the team's threads
*spin* while they wait for each other at the end of every parallel region. On an idle machine that
saves a wake-up; on a shared one it is a trap: when another busy process takes one of the cores, the
thread that lost its core is descheduled while the others spin on it, and every small kernel of a
training step waits a scheduler slice. Measured with ``selectlens bench train --contend 1`` on a
2-core machine (README, "Threads under load"): losing one core to a busy process should cost at most
2×, but the spinning team lost 3–5×.

The policy, applied by the ``selectlens`` command before torch is imported (libgomp reads its
settings once, when it loads):

* ``OMP_WAIT_POLICY=PASSIVE``: waiting threads sleep instead of spinning, so a team that lost a core
  degrades like the core count, not like the scheduler's time slice;
* ``OMP_NUM_THREADS`` = the cores this process may run on (``os.sched_getaffinity``, capped by a
  cgroup CPU quota where one is set), not the machine's count.

A value the user set in the environment is kept (``OMP_WAIT_POLICY=ACTIVE`` restores spinning).
This module is at the bottom of the package (no torch import): it must run before torch loads.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

WAIT_POLICY = "PASSIVE"


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by a cgroup v2 quota (``cpu.max``: ``quota period``), None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(float(quota) / float(period), 0.0)
    except (ValueError, ZeroDivisionError):
        return None


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(1, cores)


def thread_policy_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The variables :func:`apply_thread_policy` sets: those of the policy the environment leaves unset."""
    env = os.environ if environ is None else environ
    wanted = {"OMP_WAIT_POLICY": WAIT_POLICY, "OMP_NUM_THREADS": str(usable_cores())}
    return {k: v for k, v in wanted.items() if not env.get(k)}


def apply_thread_policy() -> dict[str, str]:
    """Set the policy's variables in ``os.environ`` (children inherit them); returns what it set.

    Call it before torch is imported: the wait policy takes effect only then. If torch is already
    loaded (a notebook), only the thread count is applied, through ``torch.set_num_threads``.
    """
    added = thread_policy_env()
    os.environ.update(added)
    torch = sys.modules.get("torch")
    if torch is not None and "OMP_NUM_THREADS" in added:
        torch.set_num_threads(int(added["OMP_NUM_THREADS"]))
    return added
