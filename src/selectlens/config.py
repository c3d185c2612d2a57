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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selectlens.errors import InputError

PRESET_DIR = Path(__file__).parent / "configs"
FLOAT_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}


class ConfigError(InputError):
    """A config problem, phrased as one line that names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def _positive_list(name: str, values: list[float] | None) -> list[float] | None:
    if values is None:
        return None
    if len(values) == 0:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must all be finite and > 0 (got {v})")
    return [float(v) for v in values]


RAW_TASKS = ("mixed_noise_regression", "linear_or_logistic")


class DataConfig(_Section):
    """The task: in-context model selection (DESIGN §1.1–1.2) or a raw-data task (§4.2).

    For the raw-data (interleaved) tasks ``N`` is the number of (x, y) pairs (2N tokens of
    width ``d_d + 1``) and ``train_samp_per_class`` the sequences per epoch; the selection
    keys (``data_alphas``, ``candidate_alphas``, ``classification``, …) are ignored.
    """

    task: Literal["selection", "mixed_noise_regression", "linear_or_logistic"] = Field(
        "selection", description="selection (the original tasks, chosen by data.classification) or a raw-data task."
    )

    train_samp_per_class: int = Field(10000, gt=0, description="Sequences per epoch, split evenly over data_alphas.")
    d_d: int = Field(5, gt=0, description="Input dimension d.")
    N: int = Field(21, ge=2, description="Sequence length: context points per sequence.")
    data_alphas: list[float] = Field([0.1, 0.8], description="Latent noise levels; one is drawn per sequence.")
    candidate_alphas: list[float] | None = Field(
        None, description="Regularisation of each candidate model; defaults to data_alphas, as in the original."
    )
    train_prop: float = Field(0.8, gt=0, lt=1, description="Fraction of an epoch's sequences used for training.")
    classification: bool = Field(False, description="Logistic-regression variant instead of ridge regression.")
    data_gen_factor: float = Field(4.0, gt=0, description="Classification only: logit scale factor.")
    noise_scale: float = Field(0.8, ge=0, description="Regression only: noise std is noise_scale * alpha.")
    noise_levels: list[float] = Field([0.1, 0.5], description="Raw tasks: noise sd σ levels; one is drawn per sequence.")
    noise_probs: list[float] | None = Field(None, description="Raw tasks: probability of each noise level (null: uniform).")
    p_regression: float = Field(0.5, ge=0, le=1, description="linear_or_logistic: probability a sequence is regression.")

    @field_validator("data_alphas")
    @classmethod
    def _check_data_alphas(cls, v: list[float]) -> list[float]:
        return _positive_list("data_alphas", v)  # type: ignore[return-value]

    @field_validator("candidate_alphas")
    @classmethod
    def _check_candidate_alphas(cls, v: list[float] | None) -> list[float] | None:
        return _positive_list("candidate_alphas", v)

    @field_validator("data_gen_factor", "noise_scale")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("noise_levels")
    @classmethod
    def _check_noise_levels(cls, v: list[float]) -> list[float]:
        return _positive_list("noise_levels", v)  # type: ignore[return-value]

    @model_validator(mode="after")
    def _check_noise_probs(self) -> "DataConfig":
        p = self.noise_probs
        if p is None:
            return self
        if len(p) != len(self.noise_levels):
            raise ValueError(f"data.noise_probs has {len(p)} entries but data.noise_levels has {len(self.noise_levels)}")
        if any(not math.isfinite(v) or v < 0 for v in p):
            raise ValueError(f"data.noise_probs must be finite and >= 0 (got {p})")
        if abs(sum(p) - 1.0) > 1e-6:
            raise ValueError(f"data.noise_probs must sum to 1 (got {sum(p):g})")
        return self

    @property
    def is_raw(self) -> bool:
        """True for the raw-data (interleaved) tasks."""
        return self.task in RAW_TASKS

    @property
    def noise_weights(self) -> list[float]:
        """Probability of each noise level (``noise_probs``, or uniform)."""
        if self.noise_probs is not None:
            return list(self.noise_probs)
        return [1.0 / len(self.noise_levels)] * len(self.noise_levels)

    @property
    def candidates(self) -> list[float]:
        """The candidate regularisations actually used (``candidate_alphas`` or ``data_alphas``)."""
        return list(self.candidate_alphas if self.candidate_alphas is not None else self.data_alphas)

    @property
    def task_name(self) -> str:
        """The task's registry name: regression / classification, or the raw task's name."""
        if self.is_raw:
            return self.task
        return "classification" if self.classification else "regression"

    @property
    def layout(self) -> str:
        """Token layout: ``selection`` (one token per test point) or ``interleaved`` (x, y tokens)."""
        return "interleaved" if self.is_raw else "selection"

    @property
    def n_features(self) -> int:
        """Token width: one prediction per candidate plus the y entry; d + 1 for raw tasks."""
        if self.is_raw:
            return self.d_d + 1
        return len(self.candidates) + 1

    @property
    def n_positions(self) -> int:
        """Tokens per sequence: N, or 2N for raw tasks (an x-token and a y-token per pair)."""
        return 2 * self.N if self.is_raw else self.N


class ModelConfig(_Section):
    """GPT-2 backbone size (DESIGN §1.3)."""

    family: Literal["gpt2"] = Field("gpt2", description="Backbone family; only gpt2.")
    n_embd: int = Field(64, gt=0, description="Residual stream width.")
    n_layer: int = Field(3, gt=0, description="Number of transformer blocks.")
    n_head: int = Field(2, gt=0, description="Attention heads per block.")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


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
    compile: bool = Field(False, description="torch.compile the loss (forward + backward); compile time counts in the run.")
    fused_adam: bool = Field(False, description="Adam's fused single-kernel update (CPU, CUDA): same maths, another trajectory.")

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

    data: DataConfig = Field(default_factory=DataConfig)
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

    @model_validator(mode="after")
    def _loss_fits_task(self) -> "Config":
        if self.data.is_raw:
            if self.training.loss != "mse":
                raise ValueError(f"training.loss must be mse for data.task {self.data.task}")
            if self.data.classification:
                raise ValueError(f"data.classification applies to data.task selection only, not {self.data.task}")
            return self
        if self.training.loss == "bce" and not self.data.classification:
            raise ValueError("training.loss bce needs data.classification true")
        return self

    @model_validator(mode="after")
    def _data_fits_dtype(self) -> "Config":
        """Scales whose squares (noise variances, ridge systems, squared errors) overflow ``dtype``
        would make the generated data or the losses non-finite: refuse them up front."""
        limit = math.sqrt(FLOAT_MAX[self.dtype]) / 1e3
        d = self.data
        checks = {"data.data_alphas": max(d.data_alphas) * max(d.noise_scale, 1.0),
                  "data.candidate_alphas": max(d.candidates), "data.data_gen_factor": d.data_gen_factor,
                  "data.noise_levels": max(d.noise_levels)}
        for key, value in checks.items():
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


def config_from_dict(raw: Any) -> Config:
    """Validate a plain mapping; raise :class:`ConfigError` with one line on failure."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config must be a mapping of sections, got {type(raw).__name__}")
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
