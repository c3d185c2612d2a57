"""Baselines with the model's call signature, below both ``train`` and ``evaluate``.

Every task family has a :class:`~selectlens.baselines.suite.BaselineSuite` (registered with
:func:`register_suite`; :func:`suite_for` finds it). ``selection`` holds the suites of the
selection layout (tokens of candidate predictions), with ``stacking`` (context stacking) and
``bayes`` (the Bayes-matched ridge, the full-information bound, the noise floor) beside it;
``raw`` those of the raw-data tasks. Importing the package imports every module in it, so a
family's own baselines module registers its suite without further edits.
"""

import importlib
import pkgutil

from selectlens.baselines.suite import BaselineFit, BaselineSuite, Predictor, register_suite, suite_for
from selectlens.baselines.common import candidate_predictions, context_errors, pointwise_loss, visible
from selectlens.baselines.selection import *  # noqa: F401,F403
from selectlens.baselines.selection import (
    SelectionFit, SelectionSuite, baseline_sees, fit_selection_baselines, fit_softmax_temperature, noise_floor_losses,
    training_temperature,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def make_baselines(task, fit=None) -> dict:
    """Every baseline of ``task`` by name (its suite's predictors for ``fit``)."""
    return suite_for(task).predictors(fit)


__all__ = [
    "BaselineFit", "BaselineSuite", "Predictor", "SelectionFit", "SelectionSuite", "baseline_sees",
    "candidate_predictions", "context_errors", "fit_selection_baselines", "fit_softmax_temperature",
    "make_baselines", "noise_floor_losses", "pointwise_loss", "register_suite", "suite_for", "training_temperature",
    "visible",
]
