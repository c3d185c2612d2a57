"""The baseline half of the task protocol: what a family is compared with.

A :class:`BaselineSuite` is registered for a task family (``@register_suite(MyTask)``); the
trainer and the evaluator ask :func:`suite_for` and never test which family they have. A suite
gives

* :meth:`BaselineSuite.predictors` — every baseline by name, each ``predict(batch) -> [B]`` or
  ``[B, P]`` in target space, with the model's call signature;
* :meth:`BaselineSuite.sees` — what each one sees: ``honest`` (only the tokens, like the model),
  ``latent`` (also a latent such as α, σ or the type), ``oracle`` (the answer) or ``bound`` (a
  reference no predictor of the tokens beats in expectation, never a competitor);
* :meth:`BaselineSuite.fit` — everything the baselines fit on training-distribution data from their
  own seed streams (never on the held-out set), by the metric being reported; the fit names the
  **reference**, the best honest baseline;
* ``bound`` — the name of the bound, where the family has one (the gap closed is measured to it);
* :meth:`BaselineSuite.extra_losses` — per-sequence losses of references that are not predictors
  (e.g. the noise floor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor

from selectlens.tasks.protocol import Batch, TaskFamily

Predictor = Callable[[Any], Tensor]
SEES = ("honest", "latent", "oracle", "bound")


@dataclass
class BaselineFit:
    """What a suite fitted on training data for one metric. ``params`` is the suite's own (JSON-able)."""

    metric: str
    best_honest: str = ""  # the reference: the honest baseline with the lowest loss on the fitting data
    train_losses: dict[str, float] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BaselineFit":
        return cls(**d)


class BaselineSuite:
    """Base class: a family's baselines. Subclasses set ``SEES`` and implement :meth:`predictors`."""

    SEES: ClassVar[dict[str, str]] = {}
    bound: ClassVar[str | None] = None
    non_selecting: ClassVar[str | None] = None  # the best rule that does not select, where the family has one

    def __init__(self, task: TaskFamily):
        self.task = task

    def predictors(self, fit: Any) -> dict[str, Predictor]:
        raise NotImplementedError

    def sees(self, name: str) -> str:
        """What predictor ``name`` sees; ``model`` is honest."""
        if name == "model":
            return "honest"
        if name in self.SEES:
            return self.SEES[name]
        for prefix, sees in self.SEES.items():  # families of names: "candidate[…]", "ridge[…]"
            if prefix.endswith("[") and name.startswith(prefix):
                return sees
        raise KeyError(f"{name!r} is not a baseline of {type(self).__name__}")

    def fit(self, seed: int, sequences: int, metric: str | None = None) -> Any:
        """Fit on training-distribution data (own seed streams); default: nothing to fit."""
        return BaselineFit(metric or self.task.loss, self.reference_name())

    def fit_from_checkpoint(self, saved: dict[str, Any], metric: str) -> Any:
        """The fit a checkpoint's trainer state stores (``baseline_fit``), or the default fit."""
        d = saved.get("baseline_fit")
        return BaselineFit.from_dict(d) if d else BaselineFit(metric, self.reference_name())

    def reference_name(self) -> str:
        """The reference of a suite without a fitted choice."""
        raise NotImplementedError

    def reference(self, fit: Any) -> str:
        return fit.best_honest

    def prefix_risk(self, batch: Batch, *, observed: bool) -> Tensor | None:
        """``[B, P]`` float64: the Bayes posterior's risk at each read-out given what the model has read before
        the query (a function of the prefix alone), on the label (``observed``) or on its conditional mean;
        NaN where the family has no closed form for that sequence's type; None where it has none at all
        (``training.position_weights: inverse_bayes_risk``)."""
        return None

    def extra_losses(self, batch: Batch, metric: str) -> dict[str, Tensor]:
        """``{name: [B]}`` per-sequence losses of references that are not predictors."""
        return {}

    def describe_fit(self, fit: Any, metric_name: str) -> str:
        """One paragraph for eval.md: what was fitted on training data."""
        return f"Reference (best honest baseline): {self.reference(fit)}."


SUITES: dict[type, type[BaselineSuite]] = {}


def register_suite(task_cls: type[TaskFamily]) -> Callable[[type[BaselineSuite]], type[BaselineSuite]]:
    """Class decorator: the suite of ``task_cls`` (and of its subclasses without their own)."""

    def register(suite_cls: type[BaselineSuite]) -> type[BaselineSuite]:
        SUITES[task_cls] = suite_cls
        return suite_cls

    return register


def suite_for(task: TaskFamily) -> BaselineSuite:
    """The baseline suite registered for ``task``'s class or its nearest base class."""
    for cls in type(task).__mro__:
        if cls in SUITES:
            return SUITES[cls](task)
    raise LookupError(f"no baseline suite is registered for task {type(task).__name__} "
                      "(decorate one with selectlens.baselines.register_suite)")
