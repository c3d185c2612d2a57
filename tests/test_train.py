
import json
import time

import pytest
import torch
from safetensors.torch import load_file

from selectlens.config import load_config
from selectlens.rundir import checkpoint_dirs, read_jsonl
from selectlens.train import train

TINY = ["data.train_samp_per_class=300", "training.batch_size=32", "training.save_every_epochs=2",
        "eval.temperature_sequences=200", "model.n_embd=16", "model.n_layer=2"]


def _cfg(*extra):
    return load_config("default", TINY + list(extra))


def test_train_writes_run_dir_and_metrics(tmp_path):
    run = tmp_path / "run"
    res = train(_cfg("training.epochs=3"), run, progress=False)
    assert res.epoch == 3 and res.step == 3 * 8  # 240 training sequences / 32
    lines = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    # sequences actually stepped on: 240 per epoch (7 full batches of 32 + one of 16), not 8 * 32 = 256
    n_train = round(_cfg().data.train_prop * 300)
    assert [r["sequences"] for r in lines] == [n_train, 2 * n_train, 3 * n_train] == [240, 480, 720]
    for r in lines:
        assert {"train_loss", "test_loss", "baselines", "lr", "step", "sequences"} <= set(r)
        assert "context_validation_select" in r["baselines"] and "oracle_select" in r["baselines"]
    assert [e for e, _ in checkpoint_dirs(run)] == [2, 3]
    assert (run / "config.json").exists() and (run / "model.safetensors").exists()
    state = torch.load(checkpoint_dirs(run)[-1][1] / "state.pt", weights_only=True)
    assert state["epoch"] == 3 and "optimizer" in state and "data_rng" in state
    # the baselines' fit (temperatures, stacking penalties, best honest) is stored and is the evaluator's fit
    from selectlens.baselines import SelectionFit, fit_selection_baselines
    from selectlens.tasks import make_task

    cfg = _cfg("training.epochs=3")
    stored = SelectionFit.from_dict(state["baseline_fit"])
    assert stored == fit_selection_baselines(make_task(cfg), cfg.seed, cfg.eval.temperature_sequences, "mse")
    assert state["temperature"] == stored.temperature and stored.stacking is not None
    assert {"context_stacking", "bayes_full_information", "oracle_softmax_ensemble_original"} <= set(lines[-1]["baselines"])


def test_resume_matches_uninterrupted_run_bitwise(tmp_path):
    full = tmp_path / "full"
    train(_cfg("training.epochs=4"), full, progress=False)
    part = tmp_path / "part"
    train(_cfg("training.epochs=4"), part, progress=False, max_minutes=1e-9)  # stops after epoch 1
    assert [e for e, _ in checkpoint_dirs(part)] == [1]
    res = train(_cfg("training.epochs=4"), part, resume=True, progress=False)
    assert res.epoch == 4
    a, b = load_file(full / "model.safetensors"), load_file(part / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (full / "metrics.jsonl").read_text() == (part / "metrics.jsonl").read_text()


def test_same_seed_same_metrics_and_different_seed_differs(tmp_path):
    train(_cfg("training.epochs=2"), tmp_path / "a", progress=False)
    train(_cfg("training.epochs=2"), tmp_path / "b", progress=False)
    train(_cfg("training.epochs=2", "seed=1"), tmp_path / "c", progress=False)
    a = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert a == (tmp_path / "b" / "metrics.jsonl").read_text()
    assert a != (tmp_path / "c" / "metrics.jsonl").read_text()


def test_existing_run_dir_is_never_overwritten(cli, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("keep")
    res = cli("train", "--out", str(run), "--quiet", *[a for o in TINY for a in ("--set", o)], "--set", "training.epochs=1")
    assert res.returncode == 2 and "exists" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert (run / "precious.txt").read_text() == "keep"
    res = cli("train", "--out", str(run), "--quiet", "--force", *[a for o in TINY for a in ("--set", o)], "--set", "training.epochs=1")
    assert res.returncode == 0, res.stderr
    assert not (run / "precious.txt").exists()


def test_non_finite_loss_stops_with_epoch_and_step(cli, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--out", str(run), "--quiet", *[a for o in TINY for a in ("--set", o)],
            "--set", "training.epochs=6", "--set", "training.save_every_epochs=1"]
    ok = cli(*args, "--max-minutes", "0.0000001")
    assert ok.returncode == 0, ok.stderr
    # Poison the checkpointed model so the resumed run's first loss is not finite.
    from selectlens.model.checkpoint import read_safetensors
    from safetensors.torch import save_file

    ckpt = checkpoint_dirs(run)[-1][1]
    tensors, meta = read_safetensors(ckpt / "model.safetensors")
    tensors["read_out.bias"] = torch.tensor([float("nan")])
    save_file(tensors, ckpt / "model.safetensors", metadata=meta)
    res = cli("train", "--out", str(run), "--resume", "--quiet")
    assert res.returncode == 1
    assert "non-finite loss at epoch 2 step 1" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert [e for e, _ in checkpoint_dirs(run)] == [1]
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1]


def test_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(_cfg("training.epochs=2", "wandb.project=selectlens-test", "wandb.name=t"), run, progress=False)
    import wandb

    wandb.teardown()  # wandb's own service writes the file: wait for it to finish (it lags under load)
    logs = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1, "wandb wrote no offline run"
    deadline = time.monotonic() + 60
    while (raw := logs[0].read_bytes()).count(b"baselines/context_validation_select") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    # two epochs of records, with the model's and the baselines' losses
    assert raw.count(b"baselines/context_validation_select") >= 2 and b"test_loss" in raw
    assert (run / "wandb_id.txt").read_text() in logs[0].name


def test_bce_training_for_classification(tmp_path):
    cfg = load_config("classification", ["data.train_samp_per_class=280", "data.N=16", "data.d_d=4",
                                         "training.loss=bce", "training.epochs=2", "training.batch_size=32",
                                         "eval.temperature_sequences=100", "model.n_embd=16"])
    res = train(cfg, tmp_path / "run", progress=False)
    from selectlens.rundir import load_run_model
    from selectlens.tasks import make_generator, make_task

    model, _ = load_run_model(tmp_path / "run")
    assert model.spec.output == "sigmoid"
    batch = make_task(cfg).sample(20, make_generator(9))
    p = model.predict(batch.tokens)
    assert ((p > 0) & (p < 1)).all()
    # the logged test loss is the log loss of those probabilities, comparable with the baselines'
    assert 0.1 < res.last["test_loss"] < 2.0 and "context_validation_select" in res.last["baselines"]


def test_bce_needs_classification():
    from selectlens.config import ConfigError

    with pytest.raises(ConfigError, match="bce"):
        load_config("default", ["training.loss=bce"])


def test_fused_adam_matches_the_for_loop_adam_and_checkpoints_keep_their_implementation(tmp_path):
    fused, loop = tmp_path / "fused", tmp_path / "loop"
    train(_cfg("training.epochs=3", "training.fused_adam=true"), fused, progress=False)
    train(_cfg("training.epochs=3"), loop, progress=False)
    a, b = load_file(fused / "model.safetensors"), load_file(loop / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)  # same maths, another kernel
    groups = {run: torch.load(checkpoint_dirs(run)[-1][1] / "state.pt", weights_only=True)["optimizer"]["param_groups"][0]
              for run in (fused, loop)}
    assert groups[fused]["fused"] is True and not groups[loop]["fused"]
    # a checkpoint keeps the implementation it was written with, whatever the config asks on resume:
    # bitwise equal to the uninterrupted for-loop run
    old = tmp_path / "old"
    train(_cfg("training.epochs=3"), old, progress=False, max_minutes=1e-9)
    saved = json.loads((old / "config.json").read_text())
    saved["training"]["fused_adam"] = True
    (old / "config.json").write_text(json.dumps(saved))
    assert train(_cfg(), old, resume=True, progress=False).epoch == 3
    c = load_file(old / "model.safetensors")
    assert all(torch.equal(b[k], c[k]) for k in b)


def test_compiled_loss_trains_like_eager(tmp_path):
    pytest.importorskip("torch._inductor")
    cfg = ["data.train_samp_per_class=100", "training.batch_size=40", "model.n_layer=1", "training.epochs=1"]
    train(_cfg(*cfg), tmp_path / "eager", progress=False)
    train(_cfg(*cfg, "training.compile=true"), tmp_path / "compiled", progress=False)
    a, b = load_file(tmp_path / "eager" / "model.safetensors"), load_file(tmp_path / "compiled" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)
    ea, eb = (read_jsonl(tmp_path / r / "metrics.jsonl")[0] for r in ("eager", "compiled"))
    assert eb["train_loss"] == pytest.approx(ea["train_loss"], rel=1e-5)
