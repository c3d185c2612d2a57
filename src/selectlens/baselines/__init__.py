"""Baselines with the model's call signature, below both ``train`` and ``evaluate``.

``selection`` holds the predictors for the model-selection layout (tokens of candidate
predictions), with ``stacking`` (context stacking) and ``bayes`` (the Bayes-matched ridge,
the full-information bound, the noise floor) beside it; raw-data (interleaved) tasks have
their own module, ``raw``.
"""

from selectlens.baselines.selection import *  # noqa: F401,F403
from selectlens.baselines.selection import (  # noqa: F401
    Predictor, SelectionFit, baseline_sees, candidate_predictions, context_errors, fit_selection_baselines,
    fit_softmax_temperature, make_baselines, noise_floor_losses, pointwise_loss, training_temperature,
)
