import json

import pytest
import torch

from selectlens.benchmarks.reference import reference_sequences
from selectlens.config import load_config


def test_reference_pipeline_has_the_original_token_semantics():
    cfg = load_config("model_selection")
    ref = reference_sequences(cfg.data, 10, seed=0)
    assert ref["tokens"].shape == (10, 21, 3)
    assert torch.all(ref["tokens"][:, -1, -1] == 0)
    counts = torch.unique(ref["alpha"], return_counts=True)[1]
    assert counts.tolist() == [5, 5]
    cls = reference_sequences(load_config("classification", ["data.N=16", "data.d_d=3"]).data, 7, seed=0)
    assert cls["tokens"].shape == (7, 16, 8) and ((cls["tokens"][..., :7] >= 0) & (cls["tokens"][..., :7] <= 1)).all()


def test_bench_datagen_json_keys(cli):
    res = cli("bench", "datagen", "--task", "regression", "--sequences", "200", "--reference-sequences", "20", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert {"ours_seq_per_s", "reference_seq_per_s", "ratio"} <= set(out)
    assert out["ratio"] == out["ours_seq_per_s"] / out["reference_seq_per_s"]


def test_bench_baselines_ratio_is_recomputable_from_the_printed_rates(cli):
    import re

    res = cli("bench", "baselines", "--task", "mixed_noise_regression", "--sequences", "300",
              "--reference-sequences", "8", "--d", "3", "--N", "6", "--threads", "1")
    assert res.returncode == 0, res.stderr
    rate = {k: float(v.replace(",", "")) for k, v in re.findall(r"(selectlens|reference)\s*:\s*([\d,.]+) sequences/s", res.stdout)}
    ratio = float(re.search(r"ratio\s*:\s*([\d,.]+)x", res.stdout).group(1).replace(",", ""))
    assert set(rate) == {"selectlens", "reference"}
    # the printed rates are rounded (ours to 1 seq/s, reference to 0.1), so the ratio to that precision
    want = rate["selectlens"] / rate["reference"]
    assert abs(ratio - want) <= 0.05 + want * (0.5 / rate["selectlens"] + 0.05 / rate["reference"]) * 1.01
    assert float(re.search(r"max \|ours − reference\| : ([\d.e+-]+)", res.stdout).group(1)) < 1e-9


def test_bench_baselines_json_and_bad_flag(cli):
    res = cli("bench", "baselines", "--sequences", "100", "--reference-sequences", "5", "--N", "5", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ratio"] == out["ours_seq_per_s"] / out["reference_seq_per_s"]
    assert out["max_abs_diff"] < 1e-9 and out["d"] == 5 and out["N"] == 5
    bad = cli("bench", "baselines", "--noise-levels", "0.1,-1")
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def _linear_flops_per_sequence(cfg) -> int:
    """Forward + backward FLOPs of the model's linear layers, by hand: each [T, a] @ [a, b]
    costs 2·T·a·b forward and twice that backward, except the read-in, whose input (the
    tokens) needs no gradient."""
    T, d, F, L = cfg.data.N, cfg.model.n_embd, cfg.data.n_features, cfg.model.n_layer
    per_token = F * d + L * (d * 3 * d + d * d + d * 4 * d + 4 * d * d) + d * 1
    return 3 * 2 * T * per_token - 2 * T * F * d


def test_bench_train_reports_flops_fraction_and_profile(cli):
    sets = ["data.train_samp_per_class=300", "training.batch_size=64", "model.n_embd=32"]
    res = cli("bench", "train", *[a for s in sets for a in ("--set", s)], "--reference-sequences", "4", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    cfg = load_config("default", sets)
    assert out["flops_per_sequence"] == _linear_flops_per_sequence(cfg)
    # the printed ratios, recomputed from the printed figures
    assert out["train_sequences_per_epoch"] == 240
    assert out["achieved_gflops"] == out["flops_per_sequence"] * 240 / out["ours_epoch_s"] / 1e9
    assert out["matmul_fraction"] == out["achieved_gflops"] / out["matmul_gflops"]
    assert out["ratio"] == out["ours_seq_per_s"] / out["reference_seq_per_s"]
    parts = out["profile"]
    assert set(parts) == {"matmuls", "other_kernels", "optimizer", "python_dispatch"}
    assert all(0 <= v <= 1 for v in parts.values()) and parts["matmuls"] > 0
    assert sum(parts.values()) == pytest.approx(1)


class _Event:
    def __init__(self, name, self_us, parent=None):
        self.name, self.self_cpu_time_total, self.cpu_parent, self.cpu_children = name, self_us, parent, []
        self.cpu_time_total = self_us
        if parent is not None:
            parent.cpu_children.append(self)
            while parent is not None:
                parent.cpu_time_total += self_us
                parent = parent.cpu_parent


def test_profile_split_attributes_each_operator():
    from selectlens.benchmarks.train import _split

    lin = _Event("aten::linear", 2)
    _Event("aten::addmm", 30, lin)
    node = _Event("autograd::engine::evaluate_function: AddmmBackward0", 3)
    _Event("aten::mm", 15, node)
    opt = _Event("Optimizer.step#Adam.step", 1)
    _Event("aten::_fused_adam_", 9, opt)
    parts = _split([lin, *lin.cpu_children, node, *node.cpu_children, opt, *opt.cpu_children,
                    _Event("aten::sum", 4), _Event("graph_0_cpp_fused_gelu_3", 5)], wall_us=100)
    # matmuls 30 + 15; other kernels: linear's own 2 + sum 4 + inductor's 5; optimizer 1 + 9; the rest is overhead
    assert parts == pytest.approx({"matmuls": 0.45, "other_kernels": 0.11, "optimizer": 0.10, "python_dispatch": 0.34})
