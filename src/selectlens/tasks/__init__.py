"""Tasks: the task protocol, the built-in families, batched candidate fitting, data files.

Importing the package registers the built-in families (``data.task`` names):
``selection`` (:mod:`.selection`), ``mixed_noise_regression`` and ``linear_or_logistic``
(:mod:`.raw`). A new family is one module with a :class:`TaskFamily` subclass; see
docs/design.md#task-protocol.
"""

from selectlens.tasks.fitting import logistic_fit, logistic_probabilities, ridge_predictions
from selectlens.tasks.protocol import (
    DTYPES, Batch, PairedBatches, TaskFamily, known_tasks, make_generator, make_task, stream_seed, task_class,
)
from selectlens.tasks.selection import ClassificationTask, RegressionTask, SelectionTask, TaskBatch
from selectlens.tasks.io import DataFileError, load_task_batch, save_task_batch
from selectlens.tasks.raw import LinearOrLogisticTask, MixedNoiseRegressionTask, RawBatch, RawTask, interleave, per_example

import importlib as _importlib
import pkgutil as _pkgutil

for _module in _pkgutil.iter_modules(__path__):  # every family module registers itself: a new family is one new module
    _importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "DTYPES", "Batch", "DataFileError", "load_task_batch", "save_task_batch", "ClassificationTask", "LinearOrLogisticTask", "MixedNoiseRegressionTask", "PairedBatches",
    "RawBatch", "RawTask", "RegressionTask", "SelectionTask", "TaskBatch", "TaskFamily", "interleave", "known_tasks",
    "logistic_fit", "logistic_probabilities", "make_generator", "make_task", "per_example", "ridge_predictions",
    "stream_seed", "task_class",
]
