"""Interpretability: weights, activations, attention (clusters, SVM), probes, logit lens,
attribution, ablation, patching, neuron statistics, plots, and the HTML report."""

from selectlens.interpret.agreement import agreement_figure, agreement_result, algorithm_agreement
from selectlens.interpret.activations import activation_cache, module_activations, nest
from selectlens.interpret.attention import (
    CONTENT_FEATURES, AttentionAnalysis, analyze_attention, analyze_patterns, attention_patterns, describe_analysis, query_roles,
)
from selectlens.interpret.circuits import (
    activation_patching, direct_attribution, head_ablation, logit_lens, neuron_statistics,
)
from selectlens.interpret.probes import run_probes, running_context_error
from selectlens.interpret.weights import flat_weights, forward_from_weights, tl_weights

__all__ = [
    "CONTENT_FEATURES", "AttentionAnalysis", "activation_cache", "agreement_figure", "agreement_result", "algorithm_agreement", "activation_patching", "analyze_attention", "analyze_patterns", "attention_patterns",
    "describe_analysis", "direct_attribution", "flat_weights", "forward_from_weights", "head_ablation", "logit_lens",
    "module_activations", "nest", "neuron_statistics", "query_roles", "run_probes",
    "running_context_error", "tl_weights",
]
