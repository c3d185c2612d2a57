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

__all__ = [
    "TASKS", "ClassificationTask", "DataFileError", "RegressionTask", "Task", "TaskBatch",
    "load_task_batch", "logistic_fit", "logistic_probabilities", "make_generator", "make_task",
    "ridge_predictions", "save_task_batch",
]
