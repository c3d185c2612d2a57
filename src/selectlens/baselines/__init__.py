"""Baselines with the model's call signature, below both ``train`` and ``evaluate``.

``selection`` holds the predictors for the model-selection layout (tokens of candidate
predictions); raw-data (interleaved) tasks get their own module beside it.
"""

from selectlens.baselines.selection import *  # noqa: F401,F403
from selectlens.baselines.selection import (  # noqa: F401
    Predictor, candidate_predictions, context_errors, fit_softmax_temperature, make_baselines,
    pointwise_loss, training_temperature,
)
