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
