"""SelectLens: in-context model-selection tasks, small transformers, baselines, and interpretability."""

__version__ = "0.1.0"

# The built-in task families register themselves (``data.task`` names) when their package is imported;
# configs are validated against them, so the package brings them in before any config is read.
import selectlens.tasks  # noqa: E402,F401
