"""Task generation: samplers, batched candidate fitting, generators, data files."""

from selectlens.tasks.fitting import logistic_fit, logistic_probabilities, ridge_predictions
from selectlens.tasks.generators import (
    TASKS,
    ClassificationTask,
    RegressionTask,
    Task,
    TaskBatch,
    make_generator,
    make_task,
)
from selectlens.tasks.io import DataFileError, load_task_batch, save_task_batch
from selectlens.tasks.raw import (
    RAW_TASKS, LinearOrLogisticTask, MixedNoiseRegressionTask, RawBatch, RawTask, interleave,
)

__all__ = [
    "RAW_TASKS", "TASKS", "ClassificationTask", "DataFileError", "LinearOrLogisticTask",
    "MixedNoiseRegressionTask", "RawBatch", "RawTask", "RegressionTask", "Task", "TaskBatch", "interleave",
    "load_task_batch", "logistic_fit", "logistic_probabilities", "make_generator", "make_task",
    "ridge_predictions", "save_task_batch",
]
