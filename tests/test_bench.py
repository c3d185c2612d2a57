import json

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
