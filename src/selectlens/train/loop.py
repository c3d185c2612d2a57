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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from selectlens.baselines import BaselineSuite, pointwise_loss, suite_for
from selectlens.config import Config, ConfigError, TrainingConfig, check_device
from selectlens.errors import SelectLensError
from selectlens.model.gpt2 import ModelSpec, SelectionTransformer
from selectlens.model.checkpoint import load_weights, read_safetensors
from selectlens import rundir
from selectlens.tasks.protocol import (
    DATA_STREAM, DTYPES, FULL_SIZE_STREAM, INIT_STREAM, SHUFFLE_STREAM, STACKING_STREAM, Batch, TaskFamily, make_generator, make_task, stream_seed,
)
from selectlens.tasks.memory import check_memory, train_bytes
from selectlens.train import distributed
from selectlens.train.distributed import DistContext
from selectlens.train.plan import EpochPlan
from selectlens.train.sinks import MetricSinks


class TrainingError(SelectLensError):
    """Training stopped abnormally (non-finite loss)."""


class _NonFiniteLoss(Exception):
    """Raised by ``train_step`` before the update; ``run_epoch`` says where."""


@dataclass
class TrainResult:
    run_dir: Path
    epoch: int
    step: int
    stopped_early: bool
    last: dict[str, Any]
    set_aside: list[Path] = field(default_factory=list)  # stale eval/report outputs moved by a resume
    reference: str = ""  # the reference baseline (best honest, chosen on training data)


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


LossFn = Callable[[SelectionTransformer, torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


def batch_loss(model: SelectionTransformer, tokens: torch.Tensor, target: torch.Tensor, readout: slice, kind: str,
               positions: str = "all", weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean training loss of ``model`` on ``tokens [B, T, F]`` against ``target [B, P]`` (or ``[B]``, P = 1)
    at the read-out positions ``readout``: every one (``positions: all``) or the last one (``last``).
    ``kind``: ``mse``, or ``bce`` (the read-out is a logit). ``weights`` weigh the positions: ``[P]`` the same
    for every sequence, ``[B, P]`` per sequence (:func:`sequence_weights`)."""
    raw = model(tokens).raw[:, readout]  # [B, P]
    target = target if target.dim() == 2 else target.unsqueeze(1)
    if positions == "last":
        raw, target = raw[:, -1:], target[:, -1:]
    if kind == "bce":
        loss = torch.nn.functional.binary_cross_entropy_with_logits(raw, target, reduction="none")
    else:
        loss = (raw - target) ** 2
    if weights is None:
        return loss.mean()
    if weights.shape not in (loss.shape[-1:], loss.shape):
        raise ValueError(f"position weights {tuple(weights.shape)} do not match the losses {tuple(loss.shape)}")
    return (loss * weights).mean()


def loss_fn(config: Config, *, compiled: bool | None = None) -> LossFn:
    """The training loss chosen by the config: ``(model, tokens, target, weights) -> scalar``.

    The task says where the model reads out; ``training.loss``, ``training.loss_positions`` and the
    batch's position ``weights`` (:func:`sequence_weights`, None: uniform) say how the read-outs are scored. ``compiled``
    (default: ``training.compile``) wraps it in ``torch.compile``: one inductor graph for forward and
    backward (C++ kernels built with gcc on CPU).
    """
    readout = make_task(config, device="cpu").readout
    kind, positions = config.training.loss, config.training.loss_positions
    fn: LossFn = lambda model, tokens, target, weights=None: batch_loss(model, tokens, target, readout, kind, positions, weights)
    if config.training.compile if compiled is None else compiled:
        fn = torch.compile(fn, dynamic=False)
    return fn


def make_optimizer(model: SelectionTransformer, config: Config) -> torch.optim.Optimizer:
    """Adam over ``model``'s parameters with the config's learning rate.

    ``fused``: one kernel updates every parameter, instead of ~10 small kernels per
    parameter tensor. A checkpoint restores the implementation it was written with
    (``load_state_dict`` takes the saved param-group flags), so old runs resume bitwise.
    """
    fused = config.training.fused_adam and next(model.parameters()).device.type in ("cpu", "cuda")
    return torch.optim.Adam(model.parameters(), lr=config.training.lr, fused=fused or None)


@dataclass
class TrainState:
    """Everything a run carries from step to step, and what a checkpoint stores."""

    run: Path
    config: Config
    device: torch.device
    task: TaskFamily
    suite: BaselineSuite
    model: SelectionTransformer
    opt: torch.optim.Optimizer
    data_gen: torch.Generator
    shuffle_gen: torch.Generator
    baseline_fit: Any  # what the suite's baselines fitted on training data (temperatures, penalties, …)
    dist: DistContext = DistContext()
    forward_model: torch.nn.Module | None = None  # what the training forward calls: DDP(model) or model
    start_epoch: int = 0
    step: int = 0
    sequences: int = 0  # training sequences actually stepped on, summed over epochs
    weights_restored: bool = False  # resume found stale run-level weights and rewrote them
    position_weights: torch.Tensor | None = None  # [P] or per type [G, P] (training.position_weights), None: uniform
    risk_scale: float | None = None  # inverse_bayes_risk: a term's weight is risk_scale / its prefix's Bayes risk

    def checkpoint_state(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "step": self.step,
            "sequences": self.sequences,
            "optimizer": self.opt.state_dict(),
            "data_rng": self.data_gen.get_state(),
            "shuffle_rng": self.shuffle_gen.get_state(),
            "temperature": getattr(self.baseline_fit, "temperature", 0.0),
            "baseline_fit": self.baseline_fit.as_dict() if self.baseline_fit else None,
            "position_weights": self.position_weights.tolist() if self.position_weights is not None else None,
            "prefix_risk_scale": self.risk_scale,
        }


def set_up(config: Config, run: Path, *, resume: bool, force: bool) -> TrainState:
    """A fresh run directory and model, or (``resume``) the run's config and its latest checkpoint.

    Logs (metrics, timing) are rewound to the checkpoint's epoch. Under ``torchrun`` every rank
    builds the same state; rank 0 alone creates and rewinds the run directory.
    """
    ctx = distributed.env_context()
    if resume:
        config = rundir.read_run_config(run)
    device = distributed.rank_device(ctx, check_device(config.device))
    check_memory(train_bytes(config), f"training (N={config.data.N}, {config.data.train_samp_per_class:,} sequences "
                 f"per epoch, batch {config.training.batch_size})", str(device),
                 "lower data.train_samp_per_class, data.N or training.batch_size")
    check_training_target(config)  # before a --force replaces anything
    task = make_task(config, device=device)
    suite = suite_for(task)
    ckpt = rundir.load_latest_checkpoint(run) if resume else None
    # refuses a family without them before the run dir is touched; a resume keeps the checkpoint's own
    weights, risk_scale = ((None, None) if ckpt is not None and ckpt[2].get("position_weights") is not None
                           else loss_weights(config, task))
    if not resume and ctx.is_main:
        rundir.prepare_run_dir(run, config, force=force)
    distributed.init_process_group(ctx, device)
    model = build_model(config).to(device)
    state = TrainState(
        run=run, config=config, device=device, task=task, suite=suite, model=model, position_weights=weights,
        risk_scale=risk_scale,
        opt=make_optimizer(model, config),
        data_gen=make_generator(stream_seed(config.seed, DATA_STREAM), device),
        shuffle_gen=make_generator(stream_seed(config.seed, SHUFFLE_STREAM), "cpu"),
        baseline_fit=None, dist=ctx,
    )
    if resume and ckpt is None and rundir.checkpoint_dirs(run):
        raise rundir.RunDirError(f"{run}: no checkpoint could be loaded")
    if ckpt is not None:
        _restore(state, *ckpt)
        if ctx.is_main:  # rank 0 alone writes the run directory
            state.weights_restored = rundir.restore_run_weights(run, ckpt[1])
    elif ctx.is_main:  # rank 0 scores the baselines
        state.baseline_fit = state.suite.fit(config.seed, config.eval.temperature_sequences, metric=config.training.loss)
    if ctx.is_main:
        for log in ("metrics", "timing"):
            rundir.truncate_jsonl(run / f"{log}.jsonl", state.start_epoch, fault=f"resume.{log}" if resume else None)
    state.forward_model = distributed.wrap_model(ctx, model, device)
    return state


def _restore(state: TrainState, epoch: int, path: Path, saved: dict[str, Any]) -> None:
    """Load a checkpoint's weights, optimizer and generator states into ``state``."""
    tensors, _ = read_safetensors(path / "model.safetensors")
    load_weights(state.model, tensors, source=str(path / "model.safetensors"))
    state.opt.load_state_dict(saved["optimizer"])
    state.data_gen.set_state(saved["data_rng"])  # generator states are CPU byte tensors on every device
    state.shuffle_gen.set_state(saved["shuffle_rng"])
    state.start_epoch = epoch
    state.step = int(saved["step"])
    state.baseline_fit = state.suite.fit_from_checkpoint(saved, state.config.training.loss)
    if saved.get("position_weights") is not None:  # the weights the run trained with, whatever this code would compute
        state.position_weights = torch.tensor(saved["position_weights"], dtype=DTYPES[state.config.dtype],
                                              device=state.device)
        state.risk_scale = _saved_risk_scale(state.config, path, saved.get("prefix_risk_scale"))
    # checkpoints written before ``sequences`` was stored: every epoch trains on all its n_train sequences
    state.sequences = int(saved.get("sequences", epoch * EpochPlan.from_config(state.config).n_train))


def _saved_risk_scale(config: Config, path: Path, scale: Any) -> float | None:
    """A checkpoint's ``prefix_risk_scale``: a positive number for a run weighted by ``inverse_bayes_risk``, else None."""
    if config.training.position_weights != "inverse_bayes_risk":
        return None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise rundir.RunDirError(f"{path}: the checkpoint's prefix_risk_scale is {scale!r}, not a positive number "
                                 f"(training.position_weights inverse_bayes_risk needs it)")
    return float(scale)


def train_step(state: TrainState, loss: LossFn, tokens: torch.Tensor, target: torch.Tensor, lr: float,
               global_batch: int | None = None, weights: torch.Tensor | None = None) -> torch.Tensor:
    """One optimiser step on ``tokens [b, T, F]``, ``target [b]`` (position ``weights`` ``[P]`` or ``[b, P]``,
    None: uniform); returns the (detached) loss.

    Distributed, ``tokens`` is this rank's share ``b_r`` of a ``global_batch`` of B sequences: the
    loss is scaled by ``world·b_r/B`` (world: the number of processes) so DDP's gradient average is the gradient of the global mean,
    and the returned loss is the global batch's mean (the same on every rank).
    """
    for g in state.opt.param_groups:
        g["lr"] = lr
    model = state.forward_model if state.forward_model is not None else state.model
    value = loss(model, tokens, target, weights)
    global_batch = global_batch or int(tokens.shape[0])
    if state.dist.enabled:
        value = value * (state.dist.world * tokens.shape[0] / global_batch)
    mean = distributed.global_mean(state.dist, value)
    if not torch.isfinite(mean):
        raise _NonFiniteLoss()
    state.opt.zero_grad(set_to_none=True)
    value.backward()
    if state.config.training.grad_clip:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), state.config.training.grad_clip)
    state.opt.step()
    state.step += 1
    state.sequences += global_batch
    return mean.detach()


@dataclass
class CurriculumSplit:
    """An epoch's test split at a curriculum point: what the model sees and what the reduced task's baselines
    see; and ``full``, a test split of the full-size task (:func:`full_size_split`), on which a curriculum run
    is compared with runs without one."""

    model_batch: Batch
    baseline_batch: Batch
    task: TaskFamily
    point: tuple[int, int]
    full: Batch | None  # None on the ranks that do not score the epoch


def full_size_split(state: TrainState, size: int) -> Batch:
    """``size`` sequences of the full-size task from a stream of their own (the run's data stream is untouched,
    so a resume stays exact): the same sequences every epoch, drawn afresh rather than stored."""
    return state.task.sample(size, make_generator(stream_seed(state.config.seed, FULL_SIZE_STREAM), state.device))


def curriculum_point(state: TrainState) -> tuple[int, int]:
    """``(d_eff, n_eff)`` at the current optimiser step (a function of the step alone, so a resume is exact)."""
    data = state.config.data
    return state.config.training.curriculum.point(state.step, data.d_d, data.N)


def _curriculum_batches(state: TrainState, plan: EpochPlan):
    """Per step, a fresh global batch at the current curriculum point; yields ``(tokens, target)``."""
    for i in range(plan.steps_per_epoch):
        size = min(plan.batch_size, plan.n_train - i * plan.batch_size)
        batch, small = state.task.sample_at(size, state.data_gen, *curriculum_point(state))
        mine = distributed.rank_slice(state.dist, torch.arange(size, device=state.device))
        yield batch.tokens[mine], training_target(state, small)[mine], None, size  # weights need no curriculum


def probe_batch(task: TaskFamily) -> Batch:
    """One sequence from a generator of its own (the run's random streams are untouched), to ask a family what
    it defines."""
    return task.sample(1, make_generator(0, task.device))


def check_training_target(config: Config) -> None:
    """``training.target: conditional_mean`` needs a family that says its labels' mean (probed on one sequence)."""
    if config.training.target != "conditional_mean":
        return
    task = make_task(config, device="cpu")
    if task.conditional_mean(probe_batch(task)) is None:
        raise ConfigError(f"training.target conditional_mean: data.task {config.data.task} does not define its labels' "
                          f"mean given the latents (TaskFamily.conditional_mean)")


POSITION_WEIGHT_SEQUENCES = 16384
MIN_TYPE_SEQUENCES = 1024  # a type with fewer measuring sequences takes the pooled weights


def loss_weights(config: Config, task: TaskFamily) -> tuple[torch.Tensor | None, float | None]:
    """The run's loss weights: ``(position weights, None)`` (:func:`position_weights`), or for
    ``inverse_bayes_risk`` ``(fallback rows [G, P], scale)`` (:func:`bayes_risk_weights`)."""
    if config.training.position_weights == "inverse_bayes_risk":
        return bayes_risk_weights(config, task)
    return position_weights(config, task), None


def _reference_risk(config: Config, task: TaskFamily, per_type: bool | None):
    """The weights' measuring batch (stacking stream, so every rank measures the same), its training target,
    each sequence's type and the reference's risk per (type, position) ``[G, P]``. ``per_type`` None: per
    type where the family has types."""
    option = config.training.position_weights
    probe = probe_batch(task)
    has_types = task.sequence_types(probe) is not None
    per_type = has_types if per_type is None else per_type
    suite = suite_for(task)  # its own: the reference's memo of this batch stays out of the run's suite
    several = probe.targets.dim() == 2 and probe.targets.shape[1] > 1
    reference = suite.predictors(None).get(suite.reference_name()) if several else None
    if reference is None:
        raise ConfigError(f"training.position_weights {option}: data.task {config.data.task} has no "
                          f"fit-free reference predictor over several read-out positions")
    if per_type and not has_types:
        raise ConfigError(f"training.position_weights {option}: data.task {config.data.task} has one type of "
                          f"sequence (TaskFamily.sequence_types); use inverse_reference")
    batch = task.sample(POSITION_WEIGHT_SEQUENCES, make_generator(stream_seed(config.seed, STACKING_STREAM), task.device))
    target = task.conditional_mean(batch) if config.training.target == "conditional_mean" else batch.targets
    loss = pointwise_loss(reference(batch).double(), target.double(), config.training.loss)  # [B, P]
    types = task.sequence_types(batch) if per_type else torch.zeros(len(batch), dtype=torch.long, device=loss.device)
    counts = torch.bincount(types, minlength=task.n_sequence_types if per_type else 1)
    pooled = loss.mean(0)
    risk = torch.stack([loss[types == g].mean(0) if counts[g] >= MIN_TYPE_SEQUENCES else pooled
                        for g in range(len(counts))])  # [G, P]
    return suite, batch, target, types, risk


def bayes_risk_weights(config: Config, task: TaskFamily) -> tuple[torch.Tensor, float]:
    """``inverse_bayes_risk``: every (sequence, position) term weighed by 1 / the Bayes posterior's risk given
    that prefix (:meth:`BaselineSuite.prefix_risk`, a function of the earlier pairs only, so every position's
    minimiser is unchanged), scaled to mean 1 over the training distribution. At the Bayes predictor each term
    then has expectation 1 given its prefix: the loss counts every prefix's *relative* excess alike, so the
    low-noise sequences, whose errors are small in absolute terms, weigh as much as the others.

    Where the family has no closed form (NaN: linear_or_logistic's prefixes of signs), the term takes the
    reference's risk at that position on the sequence's type, as ``inverse_reference_per_type`` does (the type
    the prefix reveals: :meth:`TaskFamily.sequence_types`). Squared-error losses only.

    ``training.bayes_risk_power`` β < 1 tempers it, ``scale / risk^β`` (still a function of the prefix): the
    weights' spread shrinks to its β-th power.

    Returns ``(fallback [G, P], scale)``: the fallback terms' weights and the scale of ``scale / risk^β``.
    """
    if config.training.loss != "mse":
        raise ConfigError(f"training.position_weights inverse_bayes_risk: the Bayes risk is a squared error; "
                          f"training.loss {config.training.loss} is not")
    suite, batch, _, types, fallback_risk = _reference_risk(config, task, None)
    observed = config.training.target != "conditional_mean"
    risk = suite.prefix_risk(batch, observed=observed)
    if risk is None:
        raise ConfigError(f"training.position_weights inverse_bayes_risk: data.task {config.data.task} has no "
                          f"closed-form Bayes risk per prefix (BaselineSuite.prefix_risk); use inverse_reference")
    power = config.training.bayes_risk_power
    scale = 1.0 / float(_inverse_power(torch.where(risk.isnan(), fallback_risk[types], risk), power).mean())
    return (scale * _inverse_power(fallback_risk, power)).to(batch.targets.dtype), scale


def _inverse_power(risk: torch.Tensor, power: float) -> torch.Tensor:
    """``1 / risk^power``, the risk floored at 1e-12: an inverse_bayes_risk weight before its scale."""
    return risk.clamp_min(1e-12) ** -power


def position_weights(config: Config, task: TaskFamily) -> torch.Tensor | None:
    """Loss weights of the read-out positions, mean 1 over the training distribution; None for
    ``training.position_weights: uniform``.

    ``inverse_reference``: ``[P]``, 1 / the reference predictor's risk at each position on the training target
    (observed, or its conditional mean). A position's weight does not depend on the sequence, so the minimiser
    at every position is unchanged; what changes is that positions whose error is mostly irreducible (few
    pairs seen) no longer dominate the gradient.

    ``inverse_reference_per_type``: ``[G, P]``, the same per type of sequence (:meth:`TaskFamily.sequence_types`,
    a latent the prefix reveals, so again every position's minimiser is unchanged): a type whose loss is
    mostly irreducible (classification's sign labels) no longer dominates another's gradient. A type with fewer
    than ``MIN_TYPE_SEQUENCES`` of the measuring sequences (a rare type, or one of probability 0) takes the pooled
    weights, one per position over all of them: too few of its own to measure its risk.

    Measured on training-distribution sequences of the stacking stream, so every rank computes the same
    weights (a checkpoint stores them: a resume keeps the run's own).
    """
    option = config.training.position_weights
    if option == "uniform":
        return None
    if option == "inverse_bayes_risk":
        raise ValueError("inverse_bayes_risk weighs each sequence by its prefix: use loss_weights")
    per_type = option == "inverse_reference_per_type"
    _, batch, _, types, risk = _reference_risk(config, task, per_type)
    inverse = 1.0 / risk.clamp_min(1e-12)
    inverse = inverse / inverse[types].mean()  # mean 1 over the training sequences and positions
    return (inverse if per_type else inverse[0]).to(batch.targets.dtype)


def sequence_weights(weights: torch.Tensor | None, task: TaskFamily, batch: Batch, *,
                     risk_scale: float | None = None, training: TrainingConfig | None = None,
                     suite: BaselineSuite | None = None) -> torch.Tensor | None:
    """The position weights of ``batch``'s sequences: ``[P]`` as they are, per type ``[G, P]`` → ``[B, P]``.
    With a ``risk_scale`` (``inverse_bayes_risk``): ``risk_scale / r^β`` ``[B, P]``, r the suite's prefix risk on
    ``training``'s target, β its ``bayes_risk_power``; the per-type rows where r is NaN."""
    if weights is None or (weights.dim() == 1 and risk_scale is None):
        return weights
    if risk_scale is not None and training is None:
        raise ValueError("prefix-risk weights need the training config (its target and bayes_risk_power)")
    types = task.sequence_types(batch)
    rows = weights.unsqueeze(0) if weights.dim() == 1 else weights
    fallback = rows[types] if types is not None and len(rows) > 1 else rows[0].expand(len(batch), -1)
    if risk_scale is None:
        return fallback
    observed = training.target != "conditional_mean"
    risk = (suite if suite is not None else suite_for(task)).prefix_risk(batch, observed=observed)
    weighted = (risk_scale * _inverse_power(risk, training.bayes_risk_power)).to(fallback.dtype)
    return torch.where(risk.isnan(), fallback, weighted)


def weight_rows(weights: torch.Tensor | None, rows) -> torch.Tensor | None:
    """The weights of some of the sequences (an index or a slice): one weight per position (``[P]`` or
    ``None``) serves every sequence as it is; per-sequence weights ``[B, P]`` are cut to ``rows``."""
    return weights if weights is None or weights.dim() == 1 else weights[rows]


def training_target(state: TrainState, batch: Batch) -> torch.Tensor:
    """What the loss compares the model with: the observed target, or (``training.target:
    conditional_mean``) its mean given the sequence's latents (:meth:`TaskFamily.conditional_mean`)."""
    if state.config.training.target == "conditional_mean":
        return state.task.conditional_mean(batch)
    return batch.target


def _epoch_batches(state: TrainState, plan: EpochPlan, train_b: Batch):
    order = torch.randperm(plan.n_train, generator=state.shuffle_gen).to(state.device)
    target = training_target(state, train_b)
    weights = sequence_weights(state.position_weights, state.task, train_b, risk_scale=state.risk_scale,
                               training=state.config.training, suite=state.suite)
    # None, [P] or [n_train, P]
    for i in range(plan.steps_per_epoch):
        idx = order[i * plan.batch_size : (i + 1) * plan.batch_size]  # the global batch [B]
        mine = distributed.rank_slice(state.dist, idx)  # this rank's share [b_r]
        yield train_b.tokens[mine], target[mine], weight_rows(weights, mine), len(idx)


def run_epoch(state: TrainState, plan: EpochPlan, loss: LossFn, epoch: int, bar=None):
    """Draw the epoch's fresh sequences, step through its shuffled train split once. With a curriculum,
    each step draws its own batch at the current point, and the test split is drawn at the epoch's end.

    Returns ``(mean train loss, test split)``.
    """
    if state.config.training.curriculum is None:
        batch = state.task.sample(plan.n_seq, state.data_gen)
        train_b, test_b = batch[: plan.n_train], batch[plan.n_train :]
        batches = _epoch_batches(state, plan, train_b)
    else:
        batches = _curriculum_batches(state, plan)
    state.model.train()
    total = torch.zeros((), device=state.device, dtype=torch.float64)
    for i, (tokens, target, weights, size) in enumerate(batches):
        lr = learning_rate(state.config, state.step, plan.total_steps)
        try:
            value = train_step(state, loss, tokens, target, lr, global_batch=size, weights=weights)
        except _NonFiniteLoss:
            raise TrainingError(
                f"non-finite loss at epoch {epoch + 1} step {i + 1} (global step {state.step + 1}); "
                f"last good checkpoint kept in {state.run / 'checkpoints'}"
            ) from None
        total += value
        if bar is not None:
            bar.update(1)
            if i % 10 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{value.item():.4f}", refresh=False)
    if state.config.training.curriculum is not None:
        point = curriculum_point(state)
        model_b, base_b = state.task.sample_at(plan.n_seq - plan.n_train, state.data_gen, *point)
        full = full_size_split(state, plan.n_seq - plan.n_train) if state.dist.is_main else None  # rank 0 scores
        test_b = CurriculumSplit(model_b, base_b, state.task.reduced(*point), point, full)
    return float(total) / plan.steps_per_epoch, test_b


def epoch_record(state: TrainState, epoch: int, train_loss: float, test_b, baselines) -> dict[str, Any]:
    """The epoch's ``metrics.jsonl`` line: counters, lr, train loss, test loss of model and baselines."""
    return {
        "epoch": epoch + 1,
        "step": state.step,
        "sequences": state.sequences,
        "lr": state.opt.param_groups[0]["lr"],
        "train_loss": train_loss,
        **({"train_target": "conditional_mean"} if state.config.training.target == "conditional_mean" else {}),
        **({"train_position_weights": state.position_weights.tolist()} if state.position_weights is not None else {}),
        **({"train_prefix_risk_scale": state.risk_scale} if state.risk_scale is not None else {}),
        **split_losses(state, test_b, baselines),
    }


def split_losses(state: TrainState, test_b: Batch | CurriculumSplit, baselines) -> dict[str, Any]:
    """The model's and every baseline's test loss on the epoch's test split. With a curriculum: at the current
    point, the baselines those of the reduced problem, the point in the record, and under ``full_size`` the
    same measured on the full-size split (what a scheduler compares across runs, with and without a curriculum)."""
    t = state.config.training
    if isinstance(test_b, CurriculumSplit):
        reduced = suite_for(test_b.task).predictors(None)
        out = evaluate_split(state.model, state.task, test_b.model_batch, reduced, t.loss, t.loss_positions,
                             baseline_batch=test_b.baseline_batch)
        full = evaluate_split(state.model, state.task, test_b.full, baselines, t.loss, t.loss_positions)
        return out | {"curriculum": {"d": test_b.point[0], "n": test_b.point[1]}, "full_size": full}
    return evaluate_split(state.model, state.task, test_b, baselines, t.loss, t.loss_positions)


def epoch_baselines(state: TrainState) -> dict[str, Any]:
    """The baselines scored beside the model every epoch."""
    return state.suite.predictors(state.baseline_fit)


def write_records(run: Path, record: dict[str, Any], timing: dict[str, Any], sinks: MetricSinks) -> None:
    """Append the epoch's metrics and timing lines, and forward the metrics to the sinks."""
    rundir.append_jsonl(run / "metrics.jsonl", record, fault="metrics")
    rundir.append_jsonl(run / "timing.jsonl", timing, fault="timing")
    sinks.log(record)


def save_checkpoint(state: TrainState, epoch: int) -> Path:
    """Checkpoint ``state`` after ``epoch`` epochs (atomic; also updates the run-level weights).
    Non-finite weights are never written: the last good checkpoint stays the run's."""
    bad = [name for name, p in state.model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise TrainingError(f"non-finite weights after epoch {epoch} ({bad[0]}); "
                            f"last good checkpoint kept in {state.run / 'checkpoints'}")
    return rundir.save_checkpoint(state.run, epoch, state.model, state.checkpoint_state(epoch))


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
    """Train ``config`` into ``run_dir``; with ``resume``, continue its last checkpoint.

    Under ``torchrun`` (see :mod:`selectlens.train.distributed`) every rank runs this; rank 0 alone
    evaluates the epoch's test split, writes metrics and checkpoints, and shows the progress bar.
    """
    run = Path(run_dir)
    state = set_up(config, run, resume=resume, force=force)
    ctx = state.dist
    config = state.config
    plan = EpochPlan.from_config(config)
    distributed.check_batches_split(ctx, plan.n_train, plan.batch_size)
    loss = loss_fn(config)
    baselines = epoch_baselines(state) if ctx.is_main else {}
    sinks = (sinks or MetricSinks.from_config(config, run)) if ctx.is_main else None
    started = time.monotonic()
    last: dict[str, Any] = {}
    stopped_early = False
    bar = _progress_bar(plan, state.step) if progress and ctx.is_main else None
    try:
        for epoch in range(state.start_epoch, config.training.epochs):
            t0 = time.monotonic()
            train_loss, test_b = run_epoch(state, plan, loss, epoch, bar)
            elapsed = time.monotonic() - started
            if ctx.is_main:
                last = epoch_record(state, epoch, train_loss, test_b, baselines)
                write_records(run, last, {"epoch": epoch + 1, "epoch_s": time.monotonic() - t0, "elapsed_s": elapsed,
                                           "processes": ctx.world}, sinks)
                if bar is not None:
                    bar.set_postfix(epoch=epoch + 1, test=f"{last['test_loss']:.4f}", **_reference_loss(state, last))
            out_of_time = distributed.agree(ctx, max_minutes is not None and elapsed >= max_minutes * 60)
            final = epoch + 1 == config.training.epochs
            if ctx.is_main and ((epoch + 1) % config.training.save_every_epochs == 0 or final or out_of_time):
                save_checkpoint(state, epoch + 1)
            if out_of_time and not final:
                stopped_early = True
                break
    finally:
        if bar is not None:
            bar.close()
        if sinks is not None:
            sinks.close()
    state.forward_model = None  # DDP's reducer holds the process group: release it before the group goes
    distributed.destroy_process_group(ctx)
    moved = []
    if resume and ctx.is_main:  # eval/report made from other weights than the run's final ones are moved aside
        changed = state.weights_restored or state.start_epoch < config.training.epochs
        moved = rundir.set_aside_stale_outputs(run, f"before_epoch_{state.start_epoch:06d}", weights_changed=changed)
    reference = state.suite.reference(state.baseline_fit) if state.baseline_fit is not None else ""
    return TrainResult(run, int(last.get("epoch", state.start_epoch)), state.step, stopped_early, last, moved, reference)


def _reference_loss(state: TrainState, record: dict[str, Any]) -> dict[str, str]:
    """The reference baseline (best honest, chosen on training data) shown beside the model in the progress bar."""
    name = state.suite.reference(state.baseline_fit) if state.baseline_fit is not None else ""
    return {"ref": f"{record['baselines'][name]:.4f}"} if name in record["baselines"] else {}


def _progress_bar(plan: EpochPlan, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=plan.total_steps, initial=initial, desc="train", unit="step", dynamic_ncols=True, leave=True)


@torch.no_grad()
def evaluate_split(model: SelectionTransformer, task: TaskFamily, batch: Batch, baselines, kind: str,
                   positions: str = "all", baseline_batch: Batch | None = None) -> dict[str, Any]:
    """Test loss of the model and of every baseline on the same sequences, averaged over the read-out
    positions the training loss uses (all, or the last); with several positions also ``test_loss_last``.
    ``baseline_batch``: the same sequences as the baselines see them (a curriculum's reduced problem)."""
    target = batch.targets  # [B, P]
    used = slice(None) if positions == "all" else slice(-1, None)

    def loss(pred: torch.Tensor) -> float:
        pred = pred if pred.dim() == 2 else pred.unsqueeze(1)
        return float(pointwise_loss(pred[:, used], target[:, used], kind).mean())

    pred = model.predict_positions(batch.tokens, task.readout)
    out = {"test_loss": loss(pred)}
    if target.shape[1] > 1:
        out["test_loss_last"] = float(pointwise_loss(pred, target, kind)[:, -1].mean())
    out["baselines"] = {name: loss(fn(baseline_batch or batch)) for name, fn in baselines.items()}
    return out
