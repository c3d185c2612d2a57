"""Evaluation: held-out set, model vs. every baseline of its task, confidence intervals."""

from selectlens.evaluate.context_length import context_length_figure, curve_ci, group_curves
from selectlens.evaluate.metrics import bootstrap_ratio_ci, mean_ci, paired_diff_ci
from selectlens.evaluate.runner import (
    eval_markdown, evaluate_model, evaluate_predictions, heldout_batch, plot_training_curves, write_eval,
)

__all__ = ["bootstrap_ratio_ci", "context_length_figure", "curve_ci", "eval_markdown", "evaluate_model",
           "evaluate_predictions", "group_curves", "heldout_batch", "mean_ci", "paired_diff_ci",
           "plot_training_curves", "write_eval"]
