import json
import math

import numpy as np
import pytest
import torch

from selectlens.evaluate import bootstrap_ratio_ci, mean_ci, paired_diff_ci


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


def test_paired_ci_agrees_with_an_independent_bootstrap_and_covers():
    # Known distribution: a − b = 0.1 + N(0, 1) noise shared structure; the true mean difference is 0.1.
    rng = np.random.default_rng(2)
    n = 2000
    base = rng.exponential(1.0, n)
    a, b = base + 0.1 + rng.normal(0, 1, n), base
    d, lo, hi = paired_diff_ci(torch.tensor(a), torch.tensor(b))
    boot = np.array([(a[i] - b[i]).mean() for i in rng.integers(0, n, (4000, n))])
    blo, bhi = np.quantile(boot, [0.025, 0.975])
    assert abs(lo - blo) < 0.012 and abs(hi - bhi) < 0.012  # half-width is ~0.044
    # coverage over repeated draws: the 95% CI contains the true mean difference 93–97% of the time
    hits = 0
    for _ in range(400):
        x = rng.normal(0.1, 1.0, 200) + rng.exponential(1.0, 200)
        y = rng.exponential(1.0, 200)
        _, l, h = paired_diff_ci(torch.tensor(x), torch.tensor(y))
        hits += l <= 0.1 <= h
    assert 0.92 <= hits / 400 <= 0.98


def test_bootstrap_ratio_ci_against_numpy():
    rng = np.random.default_rng(3)
    den = rng.normal(2.0, 1.0, 3000)
    num = 0.3 * den + rng.normal(0, 0.5, 3000)
    r, lo, hi = bootstrap_ratio_ci(torch.tensor(num), torch.tensor(den), resamples=2000, seed=1)
    assert r == pytest.approx(num.mean() / den.mean())
    idx = rng.integers(0, 3000, (2000, 3000))
    boot = num[idx].mean(1) / den[idx].mean(1)
    blo, bhi = np.quantile(boot, [0.025, 0.975])
    assert abs(lo - blo) < 0.004 and abs(hi - bhi) < 0.004 and lo < 0.3 < hi


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
    assert {"model", "context_validation_select", "context_softmax_ensemble", "context_stacking", "true_alpha_candidate",
            "bayes_matched_ridge", "bayes_full_information", "noise_floor", "oracle_select", "oracle_softmax_ensemble",
            "oracle_softmax_ensemble_original", "candidate_average"} <= set(preds)
    assert preds["bayes_full_information"]["sees"] == "bound" and preds["context_stacking"]["sees"] == "honest"
    table = out["tables"]["mse"]
    assert table["best_honest"] == min(table["fit"]["train_losses"], key=table["fit"]["train_losses"].get)
    gap = table["gap_closed"]
    best, m, bound = (preds[k]["mse"] for k in (table["best_honest"], "model", "bayes_full_information"))
    assert gap["value"] == pytest.approx((best - m) / (best - bound), rel=1e-9)
    assert gap["ci"][0] <= gap["value"] <= gap["ci"][1]
    assert "Gap closed" in (run / "eval.md").read_text()
    for name, e in preds.items():
        assert e["ci_low"] <= e["mse"] <= e["ci_high"]
        assert set(e["per_group"]) == {"alpha=0.1", "alpha=0.8"}
        if name != "model":
            lo, hi = e["paired_diff_ci"]
            assert lo <= e["mse"] - preds["model"]["mse"] <= hi
    assert (run / "eval.md").read_text().startswith("# Evaluation")
    assert (run / "training_curves.png").stat().st_size > 1000
    # the held-out set is fixed: a second evaluation gives identical numbers
    again = json.loads(cli("eval", "--run", str(run), "--sequences", "1000", "--json").stdout)
    assert again == out


def test_classification_eval_reports_brier_and_log_loss_with_baselines_fitted_by_each(tmp_path):
    from selectlens.config import load_config
    from selectlens.evaluate import eval_markdown, evaluate_model
    from selectlens.train import train

    cfg = load_config("classification", ["data.N=12", "data.d_d=3", "data.data_alphas=[0.5,4]",
                                         "data.train_samp_per_class=200", "training.epochs=1", "training.batch_size=50",
                                         "eval.temperature_sequences=200", "model.n_embd=16", "model.n_layer=1"])
    assert cfg.training.loss == "bce"  # the classification presets train on the logit
    run = train(cfg, tmp_path / "run", progress=False).run_dir
    from selectlens.rundir import load_run_model

    m, cfg = load_run_model(run)
    out = evaluate_model(m, cfg, sequences=400)
    assert set(out["tables"]) == {"mse", "bce"}
    brier, logloss = out["tables"]["mse"], out["tables"]["bce"]
    assert brier["metric_name"] == "Brier score" and logloss["metric_name"] == "log-loss"
    assert brier["gap_closed"] is None and "bayes_full_information" not in brier["predictors"]
    assert brier["fit"]["metric"] == "mse" and logloss["fit"]["metric"] == "bce"
    assert brier["fit"]["stacking"]["kind"] == "logistic"
    for t in (brier, logloss):
        assert t["best_honest"] == min(t["fit"]["train_losses"], key=t["fit"]["train_losses"].get)
        for name, e in t["predictors"].items():
            assert e["ci_low"] <= e["mean"] <= e["ci_high"]
    # the model's row is the same predictions scored two ways: log-loss ≥ Brier for probabilities
    assert logloss["predictors"]["model"]["mean"] > brier["predictors"]["model"]["mean"]
    text = eval_markdown(out)
    assert "## Brier score" in text and "## log-loss" in text and "No closed-form information bound" in text
