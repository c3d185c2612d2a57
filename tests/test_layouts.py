"""Token layouts of the raw-data tasks: one token per example ([x_i, y_{i-1}]) gives every read-out exactly the
information of the interleaved layout (the i earlier pairs and the query), in half the tokens; and `predict`
builds a run's own layout from pairs x, y."""

import pytest
import torch
from safetensors.torch import save_file

from conftest import run_cli
from selectlens.config import load_config
from selectlens.model import ModelSpec, SelectionTransformer
from selectlens.tasks import make_generator, make_task


def _model_and_task(layout: str):
    cfg = load_config("mixed_noise_cpu", [f"data.layout={layout}", "data.N=6", "data.d_d=3", "model.n_embd=32"])
    torch.manual_seed(0)
    return SelectionTransformer(ModelSpec.from_config(cfg)).double(), make_task(cfg)


def test_each_readout_sees_exactly_the_earlier_pairs_and_the_query():
    for layout in ("interleaved", "per_example"):
        model, task = _model_and_task(layout)
        batch = task.sample(4, make_generator(1))
        x, y = batch.x.double(), batch.y.double()
        base = model.predict_positions(task.tokens(x, y), task.readout)  # [B, N]
        assert base.shape == (4, 6)
        for i in range(6):
            later = x.clone()
            later[:, i + 1 :] += 1.0  # later inputs
            y_now = y.clone()
            y_now[:, i:] += 1.0  # the answer at i and later labels
            for xs, ys in ((later, y), (x, y_now)):
                assert torch.allclose(model.predict_positions(task.tokens(xs, ys), task.readout)[:, i], base[:, i], atol=1e-12)
            if i > 0:  # an earlier label and the query do change it
                y_before = y.clone()
                y_before[:, i - 1] += 1.0
                assert not torch.allclose(model.predict_positions(task.tokens(x, y_before), task.readout)[:, i], base[:, i])
            query = x.clone()
            query[:, i] += 1.0
            assert not torch.allclose(model.predict_positions(task.tokens(query, y), task.readout)[:, i], base[:, i])
    assert _model_and_task("per_example")[1].n_positions * 2 == _model_and_task("interleaved")[1].n_positions


@pytest.fixture(scope="module")
def per_example_run(tmp_path_factory):
    """A tiny trained run in the one-token-per-example layout (N = 20 pairs, 20 positions)."""
    run = tmp_path_factory.mktemp("layouts") / "run"
    res = run_cli("train", "--config", "mixed_noise_cpu", "--out", str(run), "--quiet", "--set", "data.layout=per_example",
                  "--set", "data.train_samp_per_class=200", "--set", "training.epochs=1", "--set", "model.n_embd=32",
                  "--set", "eval.temperature_sequences=100")
    assert res.returncode == 0, res.stderr
    return run


def test_predict_builds_the_layout_from_pairs(per_example_run, tmp_path):
    run = per_example_run
    task = make_task(load_config("mixed_noise_cpu", ["data.layout=per_example"]))
    batch = task.sample(30, make_generator(2))
    save_file({"x": batch.x.contiguous(), "y": batch.y.contiguous(), "target": batch.target.contiguous()}, tmp_path / "pairs.safetensors")
    save_file({"tokens": batch.tokens.contiguous()}, tmp_path / "tokens.safetensors")
    outs = []
    for name in ("pairs", "tokens"):
        res = run_cli("predict", "--run", str(run), "--data", str(tmp_path / f"{name}.safetensors"), "--out", str(tmp_path / f"{name}.out"))
        assert res.returncode == 0, res.stderr
        from safetensors.torch import load_file

        outs.append(load_file(tmp_path / f"{name}.out")["prediction"])
    assert outs[0].shape == (30, 20) and torch.equal(outs[0], outs[1])
    save_file({"x": batch.x.contiguous()}, tmp_path / "x_only.safetensors")
    res = run_cli("predict", "--run", str(run), "--data", str(tmp_path / "x_only.safetensors"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "'x' [B, N, d] and 'y' [B, N]" in res.stderr and "Traceback" not in res.stderr


def test_predict_refuses_tokens_of_another_layout(per_example_run, tmp_path):
    run = per_example_run
    data = tmp_path / "interleaved.safetensors"  # N = 10 pairs interleaved: 20 tokens, which would fit 20 positions
    res = run_cli("data", "--config", "mixed_noise_cpu", "--set", "data.N=10", "--set", "data.layout=interleaved",
                  "--sequences", "8", "--out", str(data))
    assert res.returncode == 0, res.stderr
    res = run_cli("predict", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "p.safetensors"))
    assert res.returncode == 2 and "interleaved layout" in res.stderr and "Traceback" not in res.stderr
