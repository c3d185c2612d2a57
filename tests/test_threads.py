"""The CPU thread policy: threads = usable cores (affinity, cgroup quota), waiting threads sleep;
the `selectlens` command applies it before torch loads, and keeps what the user set."""

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from selectlens import threads


def test_cgroup_quota_is_read(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) is None
    assert threads.cgroup_cpu_limit(tmp_path / "absent") is None


def test_usable_cores_is_the_affinity_capped_by_the_quota(monkeypatch):
    affinity = len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cores() == affinity
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 0.5)
    assert threads.usable_cores() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 2.5)
    assert threads.usable_cores() == 3


def test_the_policy_keeps_what_the_user_set():
    cores = str(threads.usable_cores())
    assert threads.thread_policy_env({}) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": cores}
    assert threads.thread_policy_env({"OMP_WAIT_POLICY": "ACTIVE"}) == {"OMP_NUM_THREADS": cores}
    assert threads.thread_policy_env({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}) == {}


@pytest.mark.parametrize("given, wait, count", [({}, "PASSIVE", None), ({"OMP_NUM_THREADS": "1"}, "PASSIVE", "1"),
                                                ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE", None)])
def test_the_command_applies_the_policy_before_torch_loads(given, wait, count):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")} | given
    code = ("import os, sys\nassert 'torch' not in sys.modules\nimport selectlens.cli, torch\n"
            "print(os.environ['OMP_WAIT_POLICY'], torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [wait, count or str(threads.usable_cores())]


@pytest.mark.slow
def test_bench_contention_compares_the_policies_in_fresh_processes():
    from selectlens.benchmarks.train import bench_contention, contention_lines
    from selectlens.config import load_config

    cfg = load_config("default", ["model.n_embd=16", "model.n_layer=1", "training.batch_size=8"])
    r = bench_contention(cfg, contend=1, steps=3)
    assert list(r["policies"]) == ["torch default", "selectlens policy", "1 thread"]
    assert r["policies"]["1 thread"]["threads"] == 1
    assert r["policies"]["selectlens policy"]["threads"] == threads.usable_cores()
    for p in r["policies"].values():
        assert p["slowdown"] == pytest.approx(p["alone_steps_per_s"] / p["contended_steps_per_s"])
    assert len(contention_lines(r)) == 4
