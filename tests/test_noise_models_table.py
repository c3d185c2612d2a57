"""scripts/noise_models_table.py: several raw runs evaluated on one held-out mixture set.

The mixture run's row must equal what ``selectlens eval`` wrote for that run (the script draws the
same held-out set: the first run's config with the union of the noise levels), and a single-σ
run is scored on both σ groups of that set."""

import importlib.util
import json

import numpy as np

from conftest import ROOT
from selectlens.config import load_config
from selectlens.train import train

TINY = ["data.N=6", "data.d_d=3", "data.train_samp_per_class=200", "training.batch_size=32", "training.epochs=1",
        "training.warmup_steps=0", "model.n_embd=16", "model.n_layer=2", "model.n_head=2", "eval.sequences=400"]


def _script():
    spec = importlib.util.spec_from_file_location("noise_models_table", ROOT / "scripts" / "noise_models_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mixture_row_equals_the_runs_own_eval_and_single_sigma_runs_are_scored_on_both(tmp_path, cli):
    mix, low = tmp_path / "mix", tmp_path / "low"
    train(load_config("mixed_noise_cpu", TINY), mix, progress=False)
    train(load_config("mixed_noise_cpu", TINY + ["data.noise_levels=[0.1]", "seed=3"]), low, progress=False)
    assert cli("eval", "--run", str(mix)).returncode == 0
    own = json.loads((mix / "eval.json").read_text())
    out = tmp_path / "table.json"
    assert _script().main([str(mix), str(low), "--sequences", "400", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["noise_levels"] == [0.1, 0.5] and res["positions"] == own["table_positions"]
    for g in ("sigma=0.1", "sigma=0.5"):
        rows, ref = res["table"][g]["rows"], own["groups"][g]
        assert res["table"][g]["sequences"] == ref["sequences"]
        for k, n in enumerate(res["positions"]):
            np.testing.assert_allclose(rows["mixture {0.1, 0.5}"]["mse_mean"][k], ref["predictors"]["model"]["mse"]["mean"][n], rtol=1e-6)
            np.testing.assert_allclose(rows["bayes_posterior_mixture"][k], ref["predictors"]["bayes_posterior_mixture"]["mse"]["mean"][n], rtol=1e-9)
            np.testing.assert_allclose(rows["mixture {0.1, 0.5}"]["per_seed"]["0"]["mean"][n], ref["excess_risk_ratio"]["mean"][n], rtol=1e-6)
        assert list(rows["σ = 0.1 only"]["per_seed"]) == ["3"]  # the single-σ run, on this group too


def test_refuses_a_directory_that_is_neither_a_sweep_nor_runs_with_one_line(tmp_path, capsys):
    empty = tmp_path / "none"
    empty.mkdir()
    (empty / "sweep.json").write_text("{}")
    assert _script().main([str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not a sweep directory" in err[0]
    assert _script().main([str(tmp_path / "missing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
