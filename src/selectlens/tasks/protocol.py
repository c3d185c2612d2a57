"""The task protocol: the one place where task families differ (docs/design.md#own-task).

A family is a subclass of :class:`TaskFamily` in one module. It declares

* ``name`` — what ``data.task`` says (registered when the class is created);
* ``Data`` — its ``data`` section: its own config keys (a :class:`~selectlens.config.DataConfig`
  subclass), the token width ``n_features`` and the sequence length ``n_positions``;
* ``Batch`` — the batch type: ``tokens [B, T, F]``, ``target`` and the ground truth;
* :meth:`TaskFamily.sample` — a batch from a ``torch.Generator``;
* ``readout`` — the token positions the model predicts at (a slice of ``[B, T]``), giving
  ``[B, P]`` predictions; ``context_sizes`` says how many labelled examples each one has seen.
  The selection layout is the case P = 1 (the last position);
* :meth:`TaskFamily.groups` — the groups results are split by (α, σ, type, pool/fresh…);
* :meth:`TaskFamily.tensor_spec` — every tensor of a sequence (what data files and memory
  estimates use);
* :meth:`TaskFamily.paired_batches` — two batches differing in one latent for activation patching;
* :meth:`TaskFamily.conditional_mean` — optionally, the target's mean given the sequence's latents
  (``training.target: conditional_mean`` trains against it; training refuses the option where it is None);
* :meth:`TaskFamily.sequence_types` — optionally, the type of each sequence where the context reveals it
  (``training.position_weights: inverse_reference_per_type`` weighs each type's loss by its own risk);
* ``loss`` / ``metrics`` — the training loss and the metrics eval reports;
* ``analyses`` — the interpretability sections its report has.

Its baselines (each with what it sees), the reference (the best honest baseline, chosen on
training data) and the bound live one layer up, in a
:class:`~selectlens.baselines.suite.BaselineSuite` registered for the family.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from selectlens.config import Config, ConfigError, DataConfig, register_family, resolve_family

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Independent random streams derived from a config's seed.
DATA_STREAM, SHUFFLE_STREAM, INIT_STREAM, TEMPERATURE_STREAM, EVAL_STREAM = 0, 1, 2, 3, 101
STACKING_STREAM = 4  # training-distribution data for fitted baselines and the best-honest choice
FULL_SIZE_STREAM = 5  # a curriculum run's full-size test split, the same sequences every epoch
PATCH_STREAM = 202  # paired batches for activation patching


def stream_seed(seed: int, stream: int) -> int:
    """The seed of random stream ``stream`` for a run seeded ``seed`` (data, shuffling, init, eval, …)."""
    return (seed * 1_000_003 + 7_919 * (stream + 1)) % (2**63 - 1)


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A seeded ``torch.Generator`` on ``device``."""
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


@dataclass
class Batch:
    """Base of every family's batch: a dataclass of tensors whose first dimension is the sequence."""

    tokens: Tensor  # [B, T, F]
    target: Tensor  # [B, P] (or [B] where P = 1)

    def as_dict(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device: torch.device | str) -> "Batch":
        return type(self)(**{k: v.to(device) for k, v in self.as_dict().items()})

    def __getitem__(self, index: slice | Tensor) -> "Batch":
        return type(self)(**{k: v[index] for k, v in self.as_dict().items()})

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @property
    def targets(self) -> Tensor:
        """``[B, P]``: the target at every read-out position."""
        return self.target if self.target.dim() == 2 else self.target.unsqueeze(1)


@dataclass
class PairedBatches:
    """Two batches for activation patching that differ only in one latent variable."""

    clean: Batch
    corrupt: Batch
    latent: str  # what differs, e.g. "α" or "σ"
    clean_value: float
    corrupt_value: float


class TaskFamily:
    """Base class of every task family; see the module docstring for what a family declares."""

    name: ClassVar[str]
    Data: ClassVar[type[DataConfig]]
    Batch: ClassVar[type[Batch]]
    layout: ClassVar[str]  # a label for reports: "selection", "interleaved", "per_example"
    loss: ClassVar[str] = "mse"  # training loss: "mse", or "bce" (the read-out is a logit)
    metrics: ClassVar[tuple[str, ...]] = ("mse",)  # eval tables; the first is the primary one
    analyses: ClassVar[tuple[str, ...]] = ()  # report sections (names in interpret.sections)
    registered: ClassVar[bool] = True  # False: a helper base class, not a value of data.task
    has_original_pipeline: ClassVar[bool] = False  # the original project's sklearn pipeline exists (bench reference)

    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "Data", "Batch", "layout", "sample", "readout", "groups")
    METHODS: ClassVar[tuple[str, ...]] = ("sample", "groups")  # must be the family's own, not the base's

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("registered", True) and "name" in cls.__dict__ and not cls.missing():
            register_family(cls.name, cls)

    @classmethod
    def missing(cls) -> list[str]:
        """What of the protocol the class lacks (empty when it is a complete family)."""
        missing = [attr for attr in cls.REQUIRED if not hasattr(cls, attr)
                   or (attr in cls.METHODS and getattr(cls, attr) is getattr(TaskFamily, attr))]
        if "Data" not in missing and not (isinstance(cls.Data, type) and issubclass(cls.Data, DataConfig)):
            missing.append("Data (a subclass of selectlens.config.DataConfig)")
        return missing

    @classmethod
    def check_protocol(cls, where: str) -> None:
        """Raise one :class:`ConfigError` line naming what a family loaded from ``where`` lacks."""
        missing = cls.missing()
        if missing:
            raise ConfigError(f"data.task {where!r}: {cls.__name__} does not implement the task protocol: "
                              f"missing {', '.join(missing)}")

    @classmethod
    def create(cls, data: DataConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> "TaskFamily":
        """The task for ``data`` (a family may pick a subclass from its keys)."""
        return cls(data, device=device, dtype=dtype)

    def __init__(self, data: DataConfig, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.data = data
        self.device = torch.device(device)
        self.dtype = dtype

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        """Draw ``batch_size`` sequences; all randomness from ``generator``."""
        raise NotImplementedError

    def sample_for_eval(self, batch_size: int, generator: torch.Generator) -> Batch:
        """The held-out set (a family may add sequences from outside its training prior)."""
        return self.sample(batch_size, generator)

    # -- layout -----------------------------------------------------------------------------
    readout: ClassVar[slice]

    @property
    def n_features(self) -> int:
        return self.data.n_features

    @property
    def n_positions(self) -> int:
        return self.data.n_positions

    @property
    def context_sizes(self) -> list[int]:
        """The number of labelled examples seen at each read-out position (length P)."""
        return list(range(self.n_positions))[self.readout]

    @property
    def n_readout(self) -> int:
        return len(self.context_sizes)

    def curve_positions(self) -> list[int]:
        """Indices into the P read-out positions that eval.md tables (all of them when P is small)."""
        P = self.n_readout
        return list(range(P))

    # -- groups and metrics -----------------------------------------------------------------
    def groups(self, batch: Batch) -> dict[str, Tensor]:
        """``[B]`` bool masks of the groups results are split by; ``all`` first."""
        raise NotImplementedError

    def curve_metrics(self, group: str) -> tuple[str, ...]:
        """Extra per-position metrics eval reports for ``group`` (e.g. the sign error)."""
        return ()

    # -- data files and memory --------------------------------------------------------------
    def tensor_spec(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Every tensor of one sequence: name → (shape without the batch dimension, dtype)."""
        probe = self.sample(1, make_generator(0, self.device))
        return {k: (tuple(v.shape[1:]), v.dtype) for k, v in probe.as_dict().items()}

    def sequence_bytes(self) -> int:
        """Bytes of one sequence with its ground truth, plus the family's fitting workspace."""
        return sum(math.prod(shape) * torch.empty((), dtype=dt).element_size() for shape, dt in self.tensor_spec().values()) \
            + self.workspace_bytes()

    def workspace_bytes(self) -> int:
        """Per-sequence temporaries while sampling (e.g. the candidates' linear systems)."""
        return 0

    # -- prediction input --------------------------------------------------------------------
    def tokens_for_prediction(self, tensors: dict[str, Tensor]) -> Tensor | None:
        """The tokens ``predict`` feeds the model from a file's tensors (default: its ``tokens``)."""
        return tensors.get("tokens")

    def prediction_input_hint(self) -> str:
        """What else ``predict`` accepts, appended to the 'no tokens' error."""
        return ""

    def check_tokens(self, tokens: Tensor) -> str | None:
        """A problem with user-given tokens ``[B, T, F]`` that fit the model's width, or None."""
        return None

    # -- training target ---------------------------------------------------------------------
    def conditional_mean(self, batch: Batch) -> Tensor | None:
        """``[B, P]``: E[target | the sequence's inputs and latents], or None where the family has none.

        ``training.target: conditional_mean`` trains against it. The model's inputs are unchanged, and since
        the label's noise is independent of everything the model sees, the expected loss's minimiser over
        predictors of the prefix stays the same (E[y_i | prefix] = E[E[y_i | x_i, latents] | prefix]); the
        label noise leaves the gradient. Eval always scores the observed target.
        """
        return None

    n_sequence_types: int = 1  # how many types sequence_types can return (a family with types sets it)

    def sequence_types(self, batch: Batch) -> Tensor | None:
        """``[B]`` int64 type index in ``0 … n_sequence_types − 1``, or None where the family has one type of sequence.

        Only for a latent the model can read off the prefix at every read-out position where the types'
        conditional means differ: a loss weight per (type, position) then leaves every position's minimiser
        unchanged (``training.position_weights: inverse_reference_per_type``). A latent the prefix does not
        reveal (a noise level, say) must not be a type: weighting it would tilt the posterior toward it.
        """
        return None

    # -- interventions ----------------------------------------------------------------------
    def paired_batches(self, n: int, generator: torch.Generator) -> PairedBatches | None:
        """Two batches differing only in one latent (same inputs, weights and noise draws), or None."""
        return None

    def describe(self) -> str:
        """One line for reports: the family and its main keys."""
        keys = ", ".join(f"{k} = {v}" for k, v in self.data.model_dump().items() if k not in ("task", "train_samp_per_class", "train_prop"))
        return f"{self.name} ({self.layout} layout): {keys}"


def task_class(config: Config | DataConfig) -> type[TaskFamily]:
    """The family class of a config (``data.task``)."""
    data = config.data if isinstance(config, Config) else config
    return resolve_family(data.task)


def make_task(config: Config, device: torch.device | str | None = None) -> TaskFamily:
    """The task a config describes, on ``device`` (default: the config's)."""
    return task_class(config).create(config.data, device=device if device is not None else config.device,
                                     dtype=DTYPES[config.dtype])


def known_tasks() -> list[str]:
    """The registered family names."""
    from selectlens.config import FAMILIES

    return sorted(FAMILIES)
