"""Training: the loop, run directories and checkpoints, metric sinks."""

from selectlens.train.loop import TrainingError, TrainResult, build_model, train

__all__ = ["TrainResult", "TrainingError", "build_model", "train"]
