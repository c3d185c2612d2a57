"""Evaluation: held-out set, model vs. every baseline, confidence intervals."""

from selectlens.evaluate.context_length import (
    context_length_figure, context_length_markdown, context_length_result, evaluate_raw_model,
)
from selectlens.evaluate.metrics import bootstrap_ratio_ci, mean_ci, paired_diff_ci
from selectlens.evaluate.runner import eval_markdown, evaluate_model, heldout_batch, plot_training_curves, write_eval

__all__ = ["bootstrap_ratio_ci", "context_length_figure", "context_length_markdown", "context_length_result", "eval_markdown", "evaluate_raw_model", "evaluate_model", "heldout_batch", "mean_ci", "paired_diff_ci", "plot_training_curves", "write_eval"]
