"""The training loop: fresh data every epoch, Adam, checkpoints, metrics.

Each epoch draws ``data.train_samp_per_class`` fresh sequences, as the
original did; ``train_prop`` of them train, the rest give the epoch's test
loss and every baseline's loss on the same sequences. Fresh data per epoch
keeps the original's semantics (and its metrics' meaning) while costing
nothing: batched generation is ~1000x cheaper than the training steps.

Randomness: model initialisation, data and shuffling each have their own
generator derived from ``seed``; the global RNG is left as it was. The
generators' states are checkpointed, so a resumed run continues with the
same batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from selectlens.baselines import make_baselines, pointwise_loss, training_temperature
from selectlens.config import Config, check_device
from selectlens.errors import SelectLensError
from selectlens.model.gpt2 import ModelSpec, SelectionTransformer
from selectlens.model.checkpoint import load_weights, read_safetensors
from selectlens import rundir
from selectlens.tasks.generators import (
    DATA_STREAM, DTYPES, INIT_STREAM, SHUFFLE_STREAM, make_generator, make_task, stream_seed,
)
from selectlens.train.sinks import MetricSinks


class TrainingError(SelectLensError):
    """Training stopped abnormally (non-finite loss)."""


@dataclass
class TrainResult:
    run_dir: Path
    epoch: int
    step: int
    stopped_early: bool
    last: dict[str, Any]


def build_model(config: Config) -> SelectionTransformer:
    """A freshly initialised model for ``config`` (seeded, without touching the global RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(config.seed, INIT_STREAM))
        model = SelectionTransformer(ModelSpec.from_config(config))
    return model.to(DTYPES[config.dtype])


def learning_rate(config: Config, step: int, total_steps: int) -> float:
    t = config.training
    if t.warmup_steps and step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    if t.schedule == "cosine":
        span = max(1, total_steps - t.warmup_steps)
        frac = min(1.0, (step - t.warmup_steps) / span)
        return t.lr * 0.5 * (1 + math.cos(math.pi * frac))
    return t.lr


def batch_loss(model: SelectionTransformer, tokens: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    out = model(tokens)
    if kind == "bce":  # the read-out is a logit
        return torch.nn.functional.binary_cross_entropy_with_logits(out.raw[:, -1], target)
    return ((out.prediction - target) ** 2).mean()


def train(
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    max_minutes: float | None = None,
    progress: bool = True,
    sinks: MetricSinks | None = None,
) -> TrainResult:
    """Train ``config`` into ``run_dir``; with ``resume``, continue its last checkpoint."""
    run = Path(run_dir)
    if resume:
        config = rundir.read_run_config(run)
    else:
        rundir.prepare_run_dir(run, config, force=force)
    device = check_device(config.device)
    task = make_task(config, device=device)
    model = build_model(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.training.lr)
    data_gen = make_generator(stream_seed(config.seed, DATA_STREAM), device)
    shuffle_gen = make_generator(stream_seed(config.seed, SHUFFLE_STREAM), "cpu")

    start_epoch, step = 0, 0
    ckpt = rundir.load_latest_checkpoint(run) if resume else None
    if resume and ckpt is None and rundir.checkpoint_dirs(run):
        raise rundir.RunDirError(f"{run}: no checkpoint could be loaded")
    if ckpt is not None:
        start_epoch, path, state = ckpt
        tensors, _ = read_safetensors(path / "model.safetensors")
        load_weights(model, tensors, source=str(path / "model.safetensors"))
        opt.load_state_dict(state["optimizer"])
        data_gen.set_state(state["data_rng"])  # generator states are CPU byte tensors on every device
        shuffle_gen.set_state(state["shuffle_rng"])
        step = int(state["step"])
        temperature = float(state["temperature"])
    else:
        temperature = training_temperature(task, config.seed, config.eval.temperature_sequences)
    rundir.truncate_jsonl(run / "metrics.jsonl", start_epoch)
    rundir.truncate_jsonl(run / "timing.jsonl", start_epoch)

    kind = config.training.loss
    baselines = make_baselines(task, temperature)
    n_seq = config.data.train_samp_per_class
    n_train = max(1, min(n_seq - 1, int(round(config.data.train_prop * n_seq))))
    bs = config.training.batch_size
    steps_per_epoch = math.ceil(n_train / bs)
    total_steps = steps_per_epoch * config.training.epochs
    sinks = sinks or MetricSinks.from_config(config, run)
    started = time.monotonic()
    last: dict[str, Any] = {}
    stopped_early = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", dynamic_ncols=True, leave=True)
    state_extra = {"temperature": temperature}
    try:
        for epoch in range(start_epoch, config.training.epochs):
            t0 = time.monotonic()
            batch = task.sample(n_seq, data_gen)
            train_b, test_b = batch[:n_train], batch[n_train:]
            order = torch.randperm(n_train, generator=shuffle_gen).to(device)
            model.train()
            total = torch.zeros((), device=device, dtype=torch.float64)
            for i in range(steps_per_epoch):
                idx = order[i * bs : (i + 1) * bs]
                for g in opt.param_groups:
                    g["lr"] = learning_rate(config, step, total_steps)
                loss = batch_loss(model, train_b.tokens[idx], train_b.target[idx], kind)
                if not torch.isfinite(loss):
                    raise TrainingError(
                        f"non-finite loss at epoch {epoch + 1} step {i + 1} (global step {step + 1}); "
                        f"last good checkpoint kept in {run / 'checkpoints'}"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if config.training.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.training.grad_clip)
                opt.step()
                total += loss.detach()
                step += 1
                if bar is not None:
                    bar.update(1)
                    if i % 10 == 0:
                        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}", refresh=False)
            record = {
                "epoch": epoch + 1,
                "step": step,
                "sequences": step * bs,
                "lr": opt.param_groups[0]["lr"],
                "train_loss": float(total) / steps_per_epoch,
                **evaluate_split(model, test_b, baselines, kind),
            }
            rundir.append_jsonl(run / "metrics.jsonl", record)
            elapsed = time.monotonic() - started
            rundir.append_jsonl(run / "timing.jsonl", {"epoch": epoch + 1, "epoch_s": time.monotonic() - t0, "elapsed_s": elapsed})
            sinks.log(record)
            last = record
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, test=f"{record['test_loss']:.4f}",
                                cv=f"{record['baselines']['context_validation_select']:.4f}")
            out_of_time = max_minutes is not None and elapsed >= max_minutes * 60
            final = epoch + 1 == config.training.epochs
            if (epoch + 1) % config.training.save_every_epochs == 0 or final or out_of_time:
                _checkpoint(run, epoch + 1, step, model, opt, data_gen, shuffle_gen, state_extra)
            if out_of_time and not final:
                stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()
        sinks.close()
    return TrainResult(run, int(last.get("epoch", start_epoch)), step, stopped_early, last)


def _checkpoint(run, epoch, step, model, opt, data_gen, shuffle_gen, extra) -> None:
    state = {
        "epoch": epoch,
        "step": step,
        "optimizer": opt.state_dict(),
        "data_rng": data_gen.get_state(),
        "shuffle_rng": shuffle_gen.get_state(),
        **extra,
    }
    rundir.save_checkpoint(run, epoch, model, state)


@torch.no_grad()
def evaluate_split(model: SelectionTransformer, batch, baselines, kind: str) -> dict[str, Any]:
    """Test loss of the model and of every baseline on the same sequences."""
    preds = model.predict_in_chunks(batch.tokens)
    out = {"test_loss": float(pointwise_loss(preds, batch.target, kind).mean())}
    out["baselines"] = {name: float(pointwise_loss(fn(batch), batch.target, kind).mean()) for name, fn in baselines.items()}
    return out
