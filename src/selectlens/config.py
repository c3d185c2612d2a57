"""Typed, validated configuration.

The original project's YAML (``data`` / ``model`` / ``training`` / ``out_dir`` /
``wandb``) loads unchanged; settings it did not have get defaults. Every
problem with a config is reported as one :class:`ConfigError` line that names
the key, so the CLI can print it and exit with code 2.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from selectlens.errors import InputError

PRESET_DIR = Path(__file__).parent / "configs"
FLOAT_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}


class ConfigError(InputError):
    """A config problem, phrased as one line that names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def positive_list(name: str, values: list[float] | None) -> list[float] | None:
    if values is None:
        return None
    if len(values) == 0:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must all be finite and > 0 (got {v})")
    return [float(v) for v in values]


class DataConfig(_Section):
    """The ``data`` section: the keys every task family has, and the family's name.

    Each family (a :class:`~selectlens.tasks.protocol.TaskFamily` in ``tasks/``) declares its own
    keys as a subclass of this class (its ``Data``); :func:`config_from_dict` validates ``data``
    against the family named by ``data.task``, so a key of another family is a one-line error.
    ``n_features`` and ``n_positions`` (the token width and sequence length the model is built
    for) follow from the family's keys and its token layout.
    """

    task: str = Field("selection", description="Task family: a registered name (see `selectlens tasks`), "
                      "an import path 'package.module:Class', or an entry point in the group selectlens.tasks.")
    train_samp_per_class: int = Field(10000, gt=0, description="Sequences per epoch.")
    d_d: int = Field(5, gt=0, description="Input dimension d.")
    N: int = Field(21, ge=2, description="Sequence length: context points (or pairs) per sequence.")
    train_prop: float = Field(0.8, gt=0, lt=1, description="Fraction of an epoch's sequences used for training.")

    @property
    def n_features(self) -> int:
        """Token width."""
        raise NotImplementedError(f"data.task {self.task!r} has no data section")

    @property
    def n_positions(self) -> int:
        """Tokens per sequence."""
        raise NotImplementedError(f"data.task {self.task!r} has no data section")

    def scales(self) -> dict[str, float]:
        """Config values whose squares must not overflow the dtype (key → value)."""
        return {}

    def check_config(self, config: "Config") -> None:
        """Checks across sections (e.g. the training loss a family allows); raise ValueError."""
        if config.training.loss != "mse":
            raise ValueError(f"training.loss must be mse for data.task {self.task}")
        self.check_training_options(config)

    def check_training_options(self, config: "Config") -> None:
        """The training options only some families support: a curriculum, the conditional-mean target, position weights."""
        cur = config.training.curriculum
        if cur is not None and not self.supports_curriculum:
            raise ValueError(f"training.curriculum applies to the raw-data tasks, not data.task {self.task}")
        if cur is not None and (cur.d_start > self.d_d or cur.n_start > self.N):
            raise ValueError(f"training.curriculum starts at d {cur.d_start}, n {cur.n_start}, beyond the task's "
                             f"d_d {self.d_d}, N {self.N}")
        if config.training.target == "conditional_mean" and not self.supports_conditional_mean:
            raise ValueError(f"training.target conditional_mean needs a task that knows its labels' mean given the "
                             f"latents (the raw-data tasks), not data.task {self.task}")
        if config.training.position_weights != "uniform" and not self.supports_position_weights:
            raise ValueError(f"training.position_weights {config.training.position_weights} needs a task read out at "
                             f"every position (the raw-data tasks), not data.task {self.task}")
        if config.training.position_weights == "inverse_reference_per_type" and not self.has_sequence_types:
            raise ValueError(f"training.position_weights inverse_reference_per_type: data.task {self.task} has one "
                             f"type of sequence; use inverse_reference")

    supports_curriculum: ClassVar[bool] = False
    has_sequence_types: ClassVar[bool] = False  # its TaskFamily.sequence_types tells types apart
    supports_conditional_mean: ClassVar[bool] = False
    supports_position_weights: ClassVar[bool] = False


# ---------------------------------------------------------------------------
# Task families: name → family class (registered by tasks.protocol.TaskFamily subclasses)

FAMILIES: dict[str, Any] = {}  # the built-in families register when ``selectlens`` is imported
ENTRY_POINT_GROUP = "selectlens.tasks"


def register_family(name: str, family: Any) -> None:
    """Make ``family`` (a class with a ``Data`` section) the task ``data.task: name``."""
    FAMILIES[name] = family


def resolve_family(name: str) -> Any:
    """The family class for ``data.task``: a registered name, an import path ``pkg.mod:Class``, or an
    entry point in the group ``selectlens.tasks``. One :class:`ConfigError` line when none fits."""
    if name in FAMILIES:
        return FAMILIES[name]
    if ":" in name:
        family = _import_family(name)
    else:
        family = _entry_point_family(name)
    if family is None:
        raise ConfigError(f"config key data.task: unknown task {name!r} (known: {', '.join(sorted(FAMILIES))}; "
                          "or an import path package.module:Class)")
    from_protocol = getattr(family, "check_protocol", None)
    if from_protocol is None:
        raise ConfigError(f"data.task {name!r}: {family!r} is not a SelectLens task family (subclass selectlens.tasks.TaskFamily)")
    from_protocol(name)
    FAMILIES[name] = family
    return family


def _import_family(path: str) -> Any:
    import importlib

    module, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # a user's module: any error is theirs, said in one line
        raise ConfigError(f"data.task {path!r}: cannot import {module}: {e.__class__.__name__}: {e}") from None
    family = getattr(mod, attr, None)
    if family is None:
        raise ConfigError(f"data.task {path!r}: module {module} has no {attr!r}")
    return family


def _entry_point_family(name: str) -> Any:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as e:
                raise ConfigError(f"data.task {name!r}: entry point {ep.value} does not load: {e.__class__.__name__}: {e}") from None
    return None


def data_section(raw: Any) -> DataConfig:
    """Validate a ``data`` mapping against its family's section (``data.task``, default selection)."""
    if isinstance(raw, DataConfig):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config key data must be a mapping, got {type(raw).__name__}")
    name = raw.get("task", "selection")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"config key data.task must be a task name (got {name!r})")
    section = resolve_family(name).Data
    try:
        return section.model_validate({**raw, "task": name})
    except ValidationError as e:
        errors = e.errors()
        first = _format_data_error(errors[0], name)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ConfigError(first + more) from None


def _format_data_error(err: dict[str, Any], task: str) -> str:
    loc = ("data", *err.get("loc", ()))
    if err.get("type") == "extra_forbidden":
        key = str(loc[-1])
        owners = sorted(n for n, f in FAMILIES.items() if key in f.Data.model_fields)
        if owners:
            return (f"config key data.{key} belongs to data.task {' / '.join(owners)}, not {task} "
                    f"(keys of {task}: {', '.join(resolve_family(task).Data.model_fields)})")
        close = difflib.get_close_matches(key, list(resolve_family(task).Data.model_fields), n=1, cutoff=0.5)
        hint = f" (did you mean data.{close[0]}?)" if close else ""
        return f"unknown config key data.{key} for data.task {task}{hint}"
    return _format_error({**err, "loc": loc})


def stored_data(raw: dict[str, Any]) -> dict[str, Any]:
    """A ``data`` mapping written by an older SelectLens (every family's keys in one section), cut to
    its own family's keys; what the user wrote is never cut (``config_from_dict`` is strict)."""
    name = raw.get("task", "selection")
    try:
        fields = resolve_family(name).Data.model_fields
    except ConfigError:
        return raw
    return {k: v for k, v in raw.items() if k in fields}


class ModelConfig(_Section):
    """GPT-2 backbone size (docs/design.md#model)."""

    family: Literal["gpt2"] = Field("gpt2", description="Backbone family; only gpt2.")
    n_embd: int = Field(64, gt=0, description="Residual stream width.")
    n_layer: int = Field(3, gt=0, description="Number of transformer blocks.")
    n_head: int = Field(2, gt=0, description="Attention heads per block.")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


class CurriculumConfig(_Section):
    """Grow the problem during training (Garg et al.; Bai et al.): the effective dimension (coordinates
    beyond it are zero in x and w) and the number of pairs, from a start by a step every ``every``
    optimiser steps, up to the task's full ``d_d`` and ``N``. Eval always runs at full size."""

    d_start: int = Field(..., ge=1, description="Effective dimension at step 0.")
    d_inc: int = Field(1, ge=0, description="Added to the effective dimension at each stage.")
    n_start: int = Field(..., ge=1, description="Pairs per sequence at step 0.")
    n_inc: int = Field(1, ge=0, description="Pairs added at each stage.")
    every: int = Field(..., ge=1, description="Optimiser steps per stage.")

    def point(self, step: int, d: int, n: int) -> tuple[int, int]:
        """``(d_eff, n_eff)`` at optimiser step ``step`` for a task of full size ``(d, n)``."""
        stage = step // self.every
        return min(d, self.d_start + stage * self.d_inc), min(n, self.n_start + stage * self.n_inc)

    def end_step(self, d: int, n: int) -> float:
        """The first optimiser step at full size ``(d, n)`` (``math.inf`` where a step of 0 never gets there)."""
        def stages(start: int, inc: int, full: int) -> float:
            return 0 if start >= full else math.inf if inc == 0 else math.ceil((full - start) / inc)

        return max(stages(self.d_start, self.d_inc, d), stages(self.n_start, self.n_inc, n)) * self.every


class TrainingConfig(_Section):
    """Optimisation schedule."""

    batch_size: int = Field(32, gt=0, description="Sequences per optimiser step.")
    lr: float = Field(4e-4, gt=0, description="Adam learning rate.")
    save_every_epochs: int = Field(50, gt=0, description="Checkpoint period in epochs.")
    epochs: int = Field(2000, gt=0, description="Number of epochs (each epoch draws fresh data).")
    loss: Literal["mse", "bce"] = Field("mse", description="mse; or bce (classification: the read-out is a logit).")
    schedule: Literal["constant", "cosine"] = Field("constant", description="Learning-rate schedule after warm-up.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up steps.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm to this value (off when null).")
    loss_positions: Literal["all", "last"] = Field(
        "all", description="Raw tasks: average the loss over every x position, or use the last one only."
    )
    curriculum: CurriculumConfig | None = Field(None, description="Raw-data tasks: grow d and N during training (off when null).")
    target: Literal["observed", "conditional_mean"] = Field(
        "observed", description="Raw-data tasks: train against the label y_i (observed) or its mean given the "
        "sequence's latents, E[y_i | x_i, w] (conditional_mean: the same minimiser, less gradient noise). "
        "Eval always scores y.")
    position_weights: Literal["uniform", "inverse_reference", "inverse_reference_per_type", "inverse_bayes_risk"] = Field(
        "uniform", description="Raw-data tasks, loss_positions all: weigh every read-out position equally, or by "
        "1 / the reference predictor's risk there (inverse_reference: the same minimiser at every position, "
        "the gradient no longer dominated by the early positions' irreducible error), or by 1 / its risk there "
        "on the sequence's own type (inverse_reference_per_type: families whose prefix reveals a type, e.g. "
        "linear_or_logistic), or each (sequence, position) by 1 / the Bayes posterior's risk given its prefix "
        "(inverse_bayes_risk: every prefix's relative excess counts alike; families with a closed-form posterior). "
        "Eval is unweighted.")
    bayes_risk_power: float = Field(
        1.0, gt=0, le=1, description="position_weights inverse_bayes_risk: weigh by 1 / risk^power (below 1 tempers "
        "the weights' spread; still the same minimiser).")
    compile: bool = Field(False, description="torch.compile the loss (forward + backward); compile time counts in the run.")
    fused_adam: bool = Field(False, description="Adam's fused single-kernel update (CPU, CUDA): same maths, another trajectory.")

    @model_validator(mode="after")
    def _weights_need_every_position(self) -> "TrainingConfig":
        tempered = self.bayes_risk_power != 1  # a β ≠ 1 goes back to 1 with any other weights
        if self.position_weights != "uniform" and (self.loss_positions != "all" or self.curriculum is not None):
            also = " and training.bayes_risk_power=1" if tempered else ""
            raise ValueError(f"position_weights {self.position_weights} needs loss_positions all and no curriculum "
                             f"(set training.position_weights=uniform{also} to train without the weights)")
        if tempered and self.position_weights != "inverse_bayes_risk":
            raise ValueError(f"bayes_risk_power {self.bayes_risk_power:g} applies to position_weights inverse_bayes_risk "
                             f"only (got {self.position_weights}: set training.bayes_risk_power=1 with it)")
        return self

    @field_validator("lr")
    @classmethod
    def _finite_lr(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v


class EvalConfig(_Section):
    """Held-out evaluation."""

    sequences: int = Field(20000, gt=0, description="Held-out sequences (seeded independently of training).")
    temperature_sequences: int = Field(4000, gt=0, description="Training sequences used to fit the context-softmax temperature.")


class WandbConfig(_Section):
    """Weights & Biases logging; on only when ``project`` is set."""

    name: str | None = None
    project: str | None = None
    entity: str | None = None
    notes: str | None = None


class Config(_Section):
    """A whole SelectLens config."""

    data: SerializeAsAny[DataConfig] = Field(default_factory=lambda: data_section({}))
    model: ModelConfig = Field(default_factory=ModelConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    out_dir: str = Field("runs/default", min_length=1, description="Default run directory.")
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    seed: int = Field(0, ge=0, description="Seed for data, initialisation and shuffling.")
    device: str = Field("cpu", description="torch device, e.g. cpu, cuda, cuda:1.")
    dtype: Literal["float32", "float64"] = Field("float32", description="Floating-point type of data and model.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, v: str) -> str:
        import torch

        try:
            torch.device(v)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"not a torch device: {v!r}") from None
        return v

    @field_validator("data", mode="before")
    @classmethod
    def _family_section(cls, v: Any) -> DataConfig:
        return data_section(v)

    @model_validator(mode="after")
    def _data_fits_config(self) -> "Config":
        self.data.check_config(self)
        return self

    @model_validator(mode="after")
    def _data_fits_dtype(self) -> "Config":
        """Scales whose squares (noise variances, ridge systems, squared errors) overflow ``dtype``
        would make the generated data or the losses non-finite: refuse them up front."""
        limit = math.sqrt(FLOAT_MAX[self.dtype]) / 1e3
        for key, value in self.data.scales().items():
            if value > limit:
                raise ValueError(f"{key} too large for dtype {self.dtype}: {value:g} would overflow "
                                 f"(at most {limit:.1e}; use dtype float64 or smaller values)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------
# Loading and error messages


def _section_model(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic class that owns the field at ``loc[:-1]``."""
    model: type[BaseModel] = Config
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def _format_error(err: dict[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc) or "<root>"
    if err.get("type") == "extra_forbidden":
        owner = _section_model(loc)
        hint = ""
        if owner is not None:
            close = difflib.get_close_matches(str(loc[-1]), list(owner.model_fields), n=1, cutoff=0.5)
            if close:
                prefix = ".".join(str(p) for p in loc[:-1])
                hint = f" (did you mean {prefix + '.' if prefix else ''}{close[0]}?)"
        return f"unknown config key {key}{hint}"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if not loc or msg.startswith(key + "."):  # a check across keys: the message names them
        return f"config: {msg}"
    value = err.get("input")
    shown = "" if isinstance(value, dict) or (isinstance(value, list) and len(repr(value)) > 60) else f" (got {value!r})"
    return f"config key {key}: {msg}{shown}"


def config_from_dict(raw: Any, *, stored: bool = False) -> Config:
    """Validate a plain mapping; raise :class:`ConfigError` with one line on failure.

    ``stored``: the config of a run or data file written by SelectLens, possibly an older one
    whose ``data`` section held every family's keys; those of other families are dropped."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping of sections, got {type(raw).__name__}")
    data = raw.get("data")
    if stored and isinstance(data, dict):
        data = stored_data(data)
    raw = {**raw, "data": data_section(data)}
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        errors = e.errors()
        first = _format_error(errors[0])
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise ConfigError(first + more) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``1e-3``, ``[0.1, 1]``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, _, value = text.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not parts or any(not p for p in parts):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"override {key}: value {value!r} is not valid YAML") from None
    # YAML 1.1 reads 1e-3 as a string; pydantic's lax mode turns it into a float for float fields.
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b=value`` override applied."""
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = {}
                node[p] = child
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from disk with one-line errors."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    if p.is_dir():
        raise ConfigError(f"config path is a directory: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {p}: {e.__class__.__name__}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config {p} is not valid YAML{where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {p} must be a mapping of sections, got {type(raw).__name__}")
    return raw


def presets() -> list[str]:
    """Names of the configs shipped with SelectLens (``configs/*.yaml``): the one list every help text shows."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def presets_help() -> str:
    """The ``--config`` help text of every command, listing the shipped presets from one place."""
    return f"Config file, or a preset name ({', '.join(presets())}). Default: default."


def config_differences(a: Config, b: Config, *, ignore: tuple[str, ...] = ("out_dir",)) -> list[str]:
    """Dotted keys whose values differ between two configs (e.g. ``data.N``), sorted."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(d, dict):
            return {prefix: d}
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}." if isinstance(v, dict) else f"{prefix}{k}"))
        return out

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    return sorted(k for k in set(fa) | set(fb) if k not in ignore and fa.get(k) != fb.get(k))


def resolve_config_path(name_or_path: str | Path | None) -> Path:
    """A config file: an existing path, or the name of a shipped preset; None means ``default``."""
    if name_or_path is None:
        return PRESET_DIR / "default.yaml"
    p = Path(name_or_path)
    if p.exists():
        return p
    preset = PRESET_DIR / f"{name_or_path}.yaml"
    if p.suffix == "" and preset.exists():
        return preset
    raise ConfigError(f"config file not found: {p} (presets: {', '.join(presets())})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file or preset (the built-in ``default`` when ``path`` is None) and apply overrides."""
    raw = read_yaml(resolve_config_path(path))
    if overrides:
        raw = apply_overrides(raw, overrides)
    return config_from_dict(raw)


def check_device(name: str) -> "torch.device":  # noqa: F821
    """A usable torch device, or a :class:`ConfigError` saying why not."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"not a torch device: {name!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name} requested but MPS is not available")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device type: {name}")
    return dev
