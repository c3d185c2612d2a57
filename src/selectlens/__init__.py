"""SelectLens: in-context model-selection tasks, small transformers, baselines, and interpretability."""

__version__ = "0.1.0"
