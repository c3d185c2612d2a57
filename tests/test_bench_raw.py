"""`bench train` on a raw-data config: sequences/s, FLOPs, GFLOP/s and the matmul fraction consistent with
each other, the profile split summing to at most 1, and no reference claimed where the original had none."""

import json
import math

from conftest import run_cli


def test_bench_train_on_a_raw_config_reports_its_own_figures():
    res = run_cli("bench", "train", "--config", "mixed_noise_cpu", "--set", "data.train_samp_per_class=600",
                  "--set", "data.layout=per_example", "--set", "model.n_embd=32", "--json")
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["task"] == "mixed_noise_regression" and r["layout"] == "per_example" and r["reference_sequences"] == 0
    assert r["ratio"] is None or math.isnan(r["ratio"])
    assert r["ours_seq_per_s"] == r["sequences_per_epoch"] / r["ours_epoch_s"]
    assert math.isclose(r["achieved_gflops"], r["flops_per_sequence"] * r["train_sequences_per_epoch"] / r["ours_epoch_s"] / 1e9)
    assert math.isclose(r["matmul_fraction"], r["achieved_gflops"] / r["matmul_gflops"])
    assert r["flops_per_sequence"] > 0 and 0 < sum(r["profile"].values()) <= 1.0001
