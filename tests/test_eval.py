import json
import math

import numpy as np
import pytest
import torch

from selectlens.evaluate import mean_ci, paired_diff_ci


def test_mean_ci_matches_closed_form():
    x = torch.tensor(np.random.default_rng(0).normal(3.0, 2.0, size=400))
    m, lo, hi = mean_ci(x)
    se = x.numpy().std(ddof=1) / math.sqrt(400)
    assert m == pytest.approx(x.numpy().mean())
    assert lo == pytest.approx(m - 1.959964 * se, rel=1e-6) and hi == pytest.approx(m + 1.959964 * se, rel=1e-6)


def test_paired_ci_is_narrower_than_unpaired_for_correlated_losses():
    rng = np.random.default_rng(1)
    base = torch.tensor(rng.exponential(1.0, 5000))
    a, b = base + 0.01, base + torch.tensor(rng.normal(0, 0.01, 5000))
    d, dlo, dhi = paired_diff_ci(a, b)
    _, alo, ahi = mean_ci(a)
    assert dlo > 0 and (dhi - dlo) < (ahi - alo) / 10
    assert d == pytest.approx(float((a - b).mean()))


def test_eval_json_contract(cli, tmp_path):
    run = tmp_path / "run"
    res = cli("train", "--out", str(run), "--quiet", "--set", "training.epochs=2",
              "--set", "data.train_samp_per_class=600", "--set", "eval.temperature_sequences=200")
    assert res.returncode == 0, res.stderr
    res = cli("eval", "--run", str(run), "--sequences", "1000", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert json.loads((run / "eval.json").read_text()) == out
    preds = out["predictors"]
    assert {"model", "context_validation_select", "context_softmax_ensemble", "true_alpha_candidate",
            "oracle_select", "oracle_softmax_ensemble", "candidate_average"} <= set(preds)
    for name, e in preds.items():
        assert e["ci_low"] <= e["mse"] <= e["ci_high"]
        assert set(e["per_alpha"]) == {"0.1", "0.8"}
        if name != "model":
            lo, hi = e["paired_diff_ci"]
            assert lo <= e["mse"] - preds["model"]["mse"] <= hi
    assert (run / "eval.md").read_text().startswith("# Evaluation")
    assert (run / "training_curves.png").stat().st_size > 1000
    # the held-out set is fixed: a second evaluation gives identical numbers
    again = json.loads(cli("eval", "--run", str(run), "--sequences", "1000", "--json").stdout)
    assert again == out
