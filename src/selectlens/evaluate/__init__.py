"""Evaluation: held-out set, model vs. every baseline, confidence intervals."""

from selectlens.evaluate.metrics import mean_ci, paired_diff_ci
from selectlens.evaluate.runner import eval_markdown, evaluate_model, heldout_batch, plot_training_curves, write_eval

__all__ = ["eval_markdown", "evaluate_model", "heldout_batch", "mean_ci", "paired_diff_ci", "plot_training_curves", "write_eval"]
