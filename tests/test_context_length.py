"""Evaluation over context length of raw runs: every per-n number recomputed with numpy from the predictions."""

import json

import numpy as np
import pytest
import torch

from selectlens.baselines import suite_for
from selectlens.baselines.raw import make_raw_baselines
from selectlens.config import load_config
from selectlens.evaluate import context_length_figure, heldout_batch
from selectlens.model.checkpoint import save_model
from selectlens.model.gpt2 import ModelSpec, SelectionTransformer
from selectlens.rundir import load_run_model, prepare_run_dir
from selectlens.tasks import make_task

Z = 1.959963984540054
SMALL = ["data.N=8", "data.d_d=3", "model.n_embd=16", "model.n_layer=1", "model.n_head=2"]


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    """A linear_or_logistic run directory with an untrained (seeded) model: eval needs no training."""
    cfg = load_config("linear_or_logistic_cpu", SMALL)
    run = tmp_path_factory.mktemp("raw") / "run"
    prepare_run_dir(run, cfg)
    torch.manual_seed(0)
    save_model(SelectionTransformer(ModelSpec.from_config(cfg)), run / "model.safetensors")
    return run, cfg


def _ci(v):
    m, half = v.mean(0), Z * v.std(0, ddof=1) / np.sqrt(v.shape[0])
    return m, m - half, m + half


def _check_curve(got, values):
    m, lo, hi = _ci(values)
    np.testing.assert_allclose(got["mean"], m, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["ci_low"], lo, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["ci_high"], hi, rtol=1e-9, atol=1e-12)


def test_eval_of_a_raw_run_recomputed_with_numpy(cli, raw_run):
    run, cfg = raw_run
    res = cli("eval", "--run", str(run), "--sequences", "400", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert json.loads((run / "eval.json").read_text()) == out
    # the predictions, exported independently of the evaluator
    model, _ = load_run_model(run)
    batch = heldout_batch(cfg, 400)
    preds = {"model": model.predict_positions(batch.tokens, make_task(cfg).readout)}
    suite = suite_for(make_task(cfg))  # fitted as eval fits it: the best single-λ ridge's λ*(n) on training data
    preds.update({k: fn(batch) for k, fn in suite.predictors(suite.fit(cfg.seed, cfg.eval.temperature_sequences)).items()})
    assert "best_single_ridge" in preds and set(make_raw_baselines(make_task(cfg))) < set(preds)
    preds = {k: v.double().numpy() for k, v in preds.items()}
    y = batch.target.double().numpy()
    sigma, reg = batch.sigma.numpy(), batch.is_regression.numpy()
    assert set(out["groups"]) == {"all", "sigma=0.1", "sigma=0.5", "regression", "classification"}
    masks = {"all": np.ones(400, bool), "classification": ~reg, "regression": reg,
             "sigma=0.1": reg & np.isclose(sigma, 0.1), "sigma=0.5": reg & np.isclose(sigma, 0.5)}
    for g, mask in masks.items():
        res_g = out["groups"][g]
        assert res_g["sequences"] == mask.sum() > 20
        for name, p in preds.items():
            sq = (p[mask] - y[mask]) ** 2
            _check_curve(res_g["predictors"][name]["mse"], sq)
            if g == "classification":
                s = (p[mask] * y[mask] < 0) + 0.5 * (p[mask] == 0)
                _check_curve(res_g["predictors"][name]["sign_error"], s)
            else:
                assert "sign_error" not in res_g["predictors"][name]
        a = (preds["model"][mask] - y[mask]) ** 2
        b = (preds["bayes_posterior_mixture"][mask] - y[mask]) ** 2
        _check_curve(res_g["model_minus_reference"], a - b)
        r = a.mean(0) / b.mean(0)
        se = (a - r * b).std(0, ddof=1) / (np.sqrt(mask.sum()) * b.mean(0))
        np.testing.assert_allclose(res_g["excess_risk_ratio"]["mean"], r - 1, rtol=1e-9)
        np.testing.assert_allclose(res_g["excess_risk_ratio"]["ci_low"], r - 1 - Z * se, rtol=1e-9)
        # the model against the type oracle, in this group's own metric(s), paired
        o = res_g["predictors"]["type_oracle"]["model_excess_over"]
        assert set(o) == ({"mse", "sign_error"} if g == "classification" else {"mse"})
        c = (preds["type_oracle"][mask] - y[mask]) ** 2
        r = a.mean(0) / c.mean(0)
        se = (a - r * c).std(0, ddof=1) / (np.sqrt(mask.sum()) * c.mean(0))
        np.testing.assert_allclose(o["mse"]["mean"], r - 1, rtol=1e-9)
        np.testing.assert_allclose(o["mse"]["ci_high"], r - 1 + Z * se, rtol=1e-9)
        assert "model_excess_over" not in res_g["predictors"]["model"]
        if g == "classification":  # and in the sign error, where the group has it
            sa = (preds["model"][mask] * y[mask] < 0) + 0.5 * (preds["model"][mask] == 0)
            sc = (preds["type_oracle"][mask] * y[mask] < 0) + 0.5 * (preds["type_oracle"][mask] == 0)
            ok = sc.mean(0) > 0
            np.testing.assert_allclose(np.array(o["sign_error"]["mean"])[ok], (sa.mean(0) / sc.mean(0) - 1)[ok], rtol=1e-9)
    # the overall table: per-sequence MSE over positions, paired (baseline − model)
    per_seq = {k: ((p - y) ** 2).mean(1) for k, p in preds.items()}
    e = out["predictors"]["least_squares"]
    diff = per_seq["least_squares"] - per_seq["model"]
    assert e["mse"] == pytest.approx(per_seq["least_squares"].mean(), rel=1e-9)
    assert e["paired_diff_ci"] == pytest.approx([float(v[0]) for v in _ci(diff[:, None])[1:]], rel=1e-9)
    assert out["predictors"]["type_oracle"]["sees"] == "latent" and out["predictors"]["averaging"]["sees"] == "honest"
    assert out["table_positions"] == [3, 6, 7]
    md = (run / "eval.md").read_text()
    assert md.startswith("# Evaluation") and "## Error over context length" in md and "| n = 3 | n = 6 | n = 7 |" in md
    assert "## classification" in md and "sign error" in md
    assert (run / "context_length.png").stat().st_size > 5000

    fig = context_length_figure(out)  # a panel per σ, the regression type and classification, a line per predictor
    assert len(fig.axes) == 4 and [len(ax.lines) for ax in fig.axes] == [len(preds)] * 4
