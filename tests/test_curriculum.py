"""training.curriculum: the point grows with the optimiser step, batches are the reduced problem padded to
the model's width, each epoch records its point, a resume is bitwise exact, and eval runs at full size."""

import json

import pytest
import torch

from selectlens.config import ConfigError, load_config
from selectlens.tasks import make_generator, make_task
from selectlens.train import train

# the presets weigh positions, which needs every position at full size: a curriculum trains unweighted
CUR = "training.curriculum={d_start: 2, d_inc: 1, n_start: 4, n_inc: 5, every: 7}"
UNIFORM = "training.position_weights=uniform"
TINY = ["data.train_samp_per_class=400", "training.batch_size=64", "model.n_embd=32", "model.n_layer=2",
        "eval.temperature_sequences=200", "training.save_every_epochs=1", CUR, UNIFORM]


def test_point_schedule_and_refusals():
    cfg = load_config("mixed_noise_cpu", [CUR, UNIFORM])
    cur = cfg.training.curriculum
    assert [cur.point(s, 5, 20) for s in (0, 6, 7, 14, 21, 70)] == [(2, 4), (2, 4), (3, 9), (4, 14), (5, 19), (5, 20)]
    with pytest.raises(ConfigError, match="curriculum applies to the raw-data tasks"):
        load_config("default", [CUR])
    with pytest.raises(ConfigError, match="beyond the task's"):
        load_config("mixed_noise_cpu", ["training.curriculum={d_start: 9, n_start: 4, every: 7}", UNIFORM])
    with pytest.raises(ConfigError, match="position_weights=uniform"):  # the preset's weights: the fix is named
        load_config("mixed_noise_cpu", [CUR])


def test_sample_at_pads_the_reduced_problem():
    task = make_task(load_config("mixed_noise_cpu", ["data.layout=per_example"]))
    full, small = task.sample_at(50, make_generator(0), 3, 6)
    assert full.tokens.shape == (50, 6, 6) and small.tokens.shape == (50, 6, 4)
    assert bool((full.x[..., 3:] == 0).all()) and torch.equal(full.x[..., :3], small.x)
    assert torch.equal(full.tokens[..., :3], small.x) and torch.equal(full.y, small.y)
    clean = (small.x @ small.w.unsqueeze(-1)).squeeze(-1) / 3**0.5  # the reduced problem's scale, 1/√d_eff
    assert float(((small.y - clean) / small.sigma.unsqueeze(-1)).std()) == pytest.approx(1.0, abs=0.1)


def test_epochs_record_their_point_and_resume_is_exact(tmp_path):
    cfg = load_config("mixed_noise_cpu", TINY + ["training.epochs=4"])
    train(cfg, tmp_path / "whole", progress=False)
    half = load_config("mixed_noise_cpu", TINY + ["training.epochs=4"])
    train(half, tmp_path / "split", progress=False, max_minutes=1e-9)  # stops after its first epoch
    train(half, tmp_path / "split", resume=True, progress=False)
    a = (tmp_path / "whole" / "model.safetensors").read_bytes()
    b = (tmp_path / "split" / "model.safetensors").read_bytes()
    assert a == b
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    cur = cfg.training.curriculum
    for r in records:
        d, n = cur.point(r["step"], 5, 20)
        assert r["curriculum"] == {"d": d, "n": n}
    assert records[0]["curriculum"]["n"] < records[-1]["curriculum"]["n"]
    resumed = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["full_size"] for r in resumed] == [r["full_size"] for r in records]  # its own stream: a resume redraws it


def test_end_step_is_the_first_step_at_full_size():
    from selectlens.config import CurriculumConfig

    for kw, full in (({"d_start": 2, "d_inc": 1, "n_start": 5, "n_inc": 3, "every": 500}, (5, 20)),
                     ({"d_start": 2, "d_inc": 2, "n_start": 4, "n_inc": 5, "every": 7}, (5, 20)),
                     ({"d_start": 5, "d_inc": 0, "n_start": 20, "n_inc": 0, "every": 3}, (5, 20))):
        cur = CurriculumConfig(**kw)
        brute = next(s for s in range(100_000) if cur.point(s, *full) == full)
        assert cur.end_step(*full) == brute
    assert CurriculumConfig(d_start=2, d_inc=0, n_start=5, n_inc=1, every=9).end_step(5, 20) == float("inf")


def test_every_epoch_is_also_scored_on_the_full_size_task(tmp_path):
    """A curriculum run's records carry ``full_size``: the model and the baselines on a full-size test split from
    a stream of its own (the same sequences every epoch). The last epoch's model loss there is recomputed by
    hand from the saved weights and the regenerated split; while the point is below full size it differs from
    the point's own loss."""
    from selectlens.rundir import load_run_model
    from selectlens.tasks.protocol import FULL_SIZE_STREAM, stream_seed
    from selectlens.train.plan import EpochPlan

    cfg = load_config("mixed_noise_cpu", TINY + ["training.epochs=2"])
    train(cfg, tmp_path / "run", progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["curriculum"] != {"d": 5, "n": 20} for r in records)  # still below full size at the end
    for r in records:
        assert set(r["baselines"]) <= set(r["full_size"]["baselines"]) and "bayes_posterior_mixture" in r["baselines"]
        assert r["full_size"]["test_loss"] != r["test_loss"]
    model, _ = load_run_model(tmp_path / "run")
    task = make_task(cfg)
    plan = EpochPlan.from_config(cfg)
    split = task.sample(plan.n_seq - plan.n_train, make_generator(stream_seed(cfg.seed, FULL_SIZE_STREAM)))
    assert bool((split.x[..., 2:] != 0).any())  # every coordinate in use: the full-size task
    with torch.no_grad():
        pred = model.predict_positions(split.tokens, task.readout).double().numpy()
    by_hand = float(((pred - split.y.double().numpy()) ** 2).mean())
    assert records[-1]["full_size"]["test_loss"] == pytest.approx(by_hand, rel=1e-5)


def test_the_full_size_split_leaves_training_untouched(tmp_path, monkeypatch):
    """Drawn from a stream of its own: a run whose full-size split comes from another seed trains bit for bit
    the same weights (it would not if the split were drawn from the run's data stream)."""
    from selectlens.train import loop

    cfg = load_config("mixed_noise_cpu", TINY + ["training.epochs=2"])
    train(cfg, tmp_path / "a", progress=False)
    monkeypatch.setattr(loop, "full_size_split", lambda state, size: state.task.sample(size, make_generator(12345)))
    train(cfg, tmp_path / "b", progress=False)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    first = lambda run: json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[0])  # noqa: E731
    assert first("a")["test_loss"] == first("b")["test_loss"] and first("a")["full_size"] != first("b")["full_size"]

