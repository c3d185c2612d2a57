"""Interpretability on raw-data (interleaved) runs: each analysis against an independent computation
or a planted answer, and the report end to end in headless Chromium."""

import json

import numpy as np
import pytest
import torch

from selectlens.config import load_config
from selectlens.interpret.raw_analyses import (
    interleaved_content_features, least_squares_weights, probe_grid, raw_activation_patching,
    role_blocks,
)
from selectlens.model.gpt2 import ModelSpec, SelectionTransformer
from selectlens.tasks import make_generator, make_task

TINY = ["data.N=5", "data.d_d=2", "data.layout=interleaved", "data.train_samp_per_class=300", "training.batch_size=50", "training.epochs=2",
        "training.warmup_steps=0", "model.n_embd=16", "model.n_layer=2", "model.n_head=2", "eval.sequences=200"]


def test_role_blocks_planted_and_uniform_null():
    T = 6  # 3 pairs
    uniform = np.tril(np.ones((T, T)))
    uniform /= uniform.sum(-1, keepdims=True)
    pats = np.broadcast_to(uniform, (1, 2, 1, T, T)).copy()  # [L, B, H, T, T]
    blocks = role_blocks(pats)
    # x-queries at 0, 2, 4 see 1/1, 2/3, 3/5 x-keys; y-queries always half.
    assert float(blocks["null[x→x]"]) == pytest.approx(np.mean([1, 2 / 3, 3 / 5]))
    assert float(blocks["null[y→x]"]) == pytest.approx(0.5)
    for b in ("x→x", "x→y", "y→x", "y→y"):
        assert blocks[b][0, 0] == pytest.approx(float(blocks[f"null[{b}]"]))
    planted = np.zeros((1, 1, 1, T, T))
    for q in range(T):
        planted[0, 0, 0, q, q - 1 if q % 2 else q] = 1.0  # y-token looks at its x, x-token at itself
    blocks = role_blocks(planted)
    assert blocks["y→x"][0, 0] == 1.0 and blocks["y→y"][0, 0] == 0.0 and blocks["x→x"][0, 0] == 1.0


def test_interleaved_content_features():
    tokens = np.array([[[3.0, 4.0, 0.0], [0.0, 0.0, -2.0]]])
    feats, names = interleaved_content_features(tokens, ["x0", "x1", "y"])
    assert names == ["x0", "x1", "y", "‖x‖", "|y|"]
    np.testing.assert_allclose(feats[0], [[3, 4, 0, 5, 0], [0, 0, -2, 0, 2]])


def test_least_squares_weights_match_numpy_lstsq_on_every_prefix():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 7, 3, generator=g, dtype=torch.float64), torch.randn(3, 7, generator=g, dtype=torch.float64)
    w = least_squares_weights(x, y)
    assert w.shape == (3, 7, 3) and torch.all(w[:, 0] == 0)
    for b in range(3):
        for n in range(1, 7):  # n < d: numpy's lstsq is the minimum-norm solution too
            ref = np.linalg.lstsq(x[b, :n].numpy(), y[b, :n].numpy(), rcond=None)[0]
            np.testing.assert_allclose(w[b, n].numpy(), ref, atol=1e-9)


def test_probe_grid_finds_planted_signal_and_its_null_does_not():
    rng = np.random.default_rng(0)
    B, N, D = 400, 3, 8
    w = rng.normal(size=(B, 2))
    resid = rng.normal(size=(2, B, N, D))
    resid[1, :, :, :2] += 3 * w[:, None, :]  # layer 1 holds w linearly, layer 0 does not
    scores, null = probe_grid(resid, w, "r2", seed=0)
    assert scores.shape == (2, N, 2)
    assert scores[1].min() > 0.85 and scores[0].max() < 0.1 and null.max() < 0.1
    labels = (w[:, 0] > 0).astype(int)
    acc, acc_null = probe_grid(resid, labels, "accuracy", seed=0)
    assert acc[1].min() > 0.8 and acc[0].max() < 0.65 and acc_null.max() < 0.65  # sign of 3w₀ + noise: ≈ 0.9


def test_paired_batches_differ_only_in_sigma():
    cfg = load_config("mixed_noise_cpu", TINY + ["dtype=float64", "data.noise_levels=[0.5, 0.1, 0.3]"])
    pair = make_task(cfg).paired_batches(20, make_generator(0))  # the lowest σ against the highest
    assert (pair.latent, pair.clean_value, pair.corrupt_value) == ("σ", 0.1, 0.5)
    clean, corrupt = pair.clean, pair.corrupt
    assert torch.equal(clean.x, corrupt.x) and torch.equal(clean.w, corrupt.w)
    z_clean = (clean.y - (clean.x @ clean.w.unsqueeze(-1)).squeeze(-1) / np.sqrt(2)) / 0.1
    z_corrupt = (corrupt.y - (corrupt.x @ corrupt.w.unsqueeze(-1)).squeeze(-1) / np.sqrt(2)) / 0.5
    torch.testing.assert_close(z_clean, z_corrupt)
    assert torch.all(clean.sigma == 0.1) and torch.all(corrupt.sigma == 0.5)
    assert torch.all(clean.is_regression) and torch.all(corrupt.is_regression)
    one_level = load_config("mixed_noise_cpu", TINY + ["data.noise_levels=[0.2]"])
    assert make_task(one_level).paired_batches(5, make_generator(0)) is None  # nothing to pair


@pytest.mark.parametrize("layout", ["interleaved", "per_example"])
def test_layer0_patching_equals_swapping_the_token(layout):
    """Patching resid_pre of block 0 at position t is the same as giving the corrupted run the clean token t
    (read out at the last read-out position: the last x-token, T − 2 interleaved, T − 1 per example)."""
    cfg = load_config("mixed_noise_cpu", TINY + ["dtype=float64", f"data.layout={layout}"])
    torch.manual_seed(0)
    model = SelectionTransformer(ModelSpec.from_config(cfg)).double().eval()
    task = make_task(cfg)
    pair = task.paired_batches(30, make_generator(1))
    clean, corrupt = pair.clean, pair.corrupt
    T = clean.tokens.shape[1]
    q = list(range(T))[task.readout][-1]
    assert q == {"interleaved": T - 2, "per_example": T - 1}[layout]
    res = raw_activation_patching(model, clean, corrupt, q)
    if layout == "interleaved":  # the default position is the last x-token of interleaved tokens
        np.testing.assert_array_equal(raw_activation_patching(model, clean, corrupt)["resid_output"], res["resid_output"])
    with torch.no_grad():
        c, k = model(clean.tokens).raw[:, q], model(corrupt.tokens).raw[:, q]
        for t in range(q + 1):
            hybrid = corrupt.tokens.clone()
            hybrid[:, t] = clean.tokens[:, t]
            p = model(hybrid).raw[:, q]
            expected = float(((p - k) * (c - k).sign()).mean() / (c - k).abs().mean())
            assert res["resid_output"][0, t] == pytest.approx(expected, abs=1e-9)
    assert res["resid_output"].shape == (2, q + 1) and res["head_output"].shape == (2, 2)
    assert res["resid_output"][0, 0] == pytest.approx(0.0, abs=1e-9)  # x-token 0 is the same in both
    assert float(res["corrupt_loss"]) == pytest.approx(float(((k - corrupt.target[:, -1]) ** 2).mean()), rel=1e-12)


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory, cli_module):
    run = tmp_path_factory.mktemp("raw") / "run"
    args = ["run", "--config", "linear_or_logistic_cpu", "--out", str(run), "--quiet",
            "--set", "wandb.name=<script>alert('x')</script>&amp;", "--set", "wandb.notes=<b>bold</b>"]
    res = cli_module(*args, *[a for o in TINY for a in ("--set", o)])
    assert res.returncode == 0, res.stderr
    return run


@pytest.fixture(scope="module")
def cli_module():
    from conftest import run_cli

    return run_cli


def test_raw_run_end_to_end_writes_every_artifact(raw_run):
    report = raw_run / "report"
    for name in ("training_curves", "context_length", "agreement", "attention_grid", "role_blocks", "probes",
                 "patching", "patching_heads"):
        assert (report / f"{name}.png").stat().st_size > 2000, name
    numbers = json.loads((report / "interpret.json").read_text())
    assert set(numbers["probes"]) == {"w", "sigma", "posterior", "least_squares_w", "task_type"}
    assert np.array(numbers["probes"]["w"]["scores"]).shape == (3, 5)  # layers 0..2, x positions 0..4
    assert np.array(numbers["attention"]["role_blocks"]["x→y"]).shape == (2, 2)
    assert {r for h in numbers["attention"]["heads"] for r in h["roles"]} == {"x", "y"}
    assert np.array(numbers["patching"]["resid_output"]).shape == (2, 9)
    ev = json.loads((raw_run / "eval.json").read_text())
    assert ev["layout"] == "interleaved" and numbers["eval"]["groups"].keys() == ev["groups"].keys()


def test_raw_report_in_headless_chromium_escapes_strings(raw_run, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 1600})
    errors, requests, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto((raw_run / "report" / "report.html").as_uri())
    page.wait_for_load_state("load")
    for section in ("training", "eval", "agreement", "attention", "probes", "patching", "config"):
        assert page.locator(f"#{section} img, #{section} table").count() > 0, section
    assert page.locator("#run-name").inner_text() == "<script>alert('x')</script>&amp;"
    assert page.locator("#run-notes").inner_text() == "<b>bold</b>" and page.locator("#run-notes b").count() == 0
    assert not dialogs and not errors, (dialogs, errors)
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert json.loads(page.locator("#report-numbers").inner_text())["task"] == "linear_or_logistic"
    page.close()


def test_interpret_run_on_mixed_noise_picks_the_raw_report(tmp_path):
    from selectlens.interpret.report import interpret_run
    from selectlens.train import train

    cfg = load_config("mixed_noise_cpu", TINY + ["training.epochs=1"])
    train(cfg, tmp_path / "run", progress=False)
    paths = interpret_run(tmp_path / "run", sequences=64)
    numbers = json.loads(paths["json"].read_text())
    assert numbers["layout"] == "interleaved" and set(numbers["probes"]) == {"w", "sigma", "posterior", "least_squares_w"}
    assert numbers["patching"]["sigma_clean"] == 0.1 and numbers["patching"]["sigma_corrupt"] == 0.5
    assert "id=\"agreement\"" in paths["html"].read_text()


def test_best_cell_ci_covers_the_score_and_role_block_ci_over_sequences():
    from selectlens.interpret.raw_analyses import best_cell_ci

    rng = np.random.default_rng(1)
    B, D = 400, 6
    w = rng.normal(size=(B, 2))
    resid = rng.normal(size=(1, B, 1, D))
    resid[0, :, 0, :2] += w
    scores, _ = probe_grid(resid, w, "r2", seed=0)
    lo, hi = best_cell_ci(resid, w, "r2", 0, 0, seed=0)
    assert lo < scores[0, 0].mean() < hi and hi - lo < 0.3
    pats = rng.dirichlet(np.ones(4), size=(1, 50, 1, 4))  # rows sum to 1 (non-causal, fine for the arithmetic)
    blocks = role_blocks(pats)
    per_seq = pats[0, :, 0][:, 0::2][:, :, 0::2].sum(-1).mean(-1)  # x-queries' mass on x-keys, per sequence
    half = 1.959963984540054 * per_seq.std(ddof=1) / np.sqrt(50)
    np.testing.assert_allclose(blocks["ci[x→x]"][:, 0, 0], [per_seq.mean() - half, per_seq.mean() + half])
