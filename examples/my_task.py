"""A task family of your own, in one module: in-context regression with heavy-tailed noise.

Run it like any built-in family by naming the class as ``data.task`` (the module must be importable,
e.g. with ``PYTHONPATH=examples``)::

    PYTHONPATH=examples selectlens run --config mixed_noise_cpu --set data.task=my_task:LaplaceNoiseTask --out runs/laplace

or from Python: ``python examples/my_task.py runs/laplace``. SelectLens checks the class against the
task protocol when the config is loaded (a missing piece is a one-line error). This family reuses the
raw-data layout, groups and baselines of ``RawTask`` (its baseline suite is found through the base
class); only the noise differs: Laplace with the variance σ² of the Gaussian task, so the Gaussian
Bayes mixture is a strong reference here but no longer the Bayes predictor.
"""

import math
import sys

import torch
from torch import Tensor

from selectlens.tasks.raw import RawBatch, RawData, RawTask


class LaplaceNoiseTask(RawTask):
    """Linear regression y = xᵀw/√d + σ·ε with Laplace ε of unit variance, σ drawn per sequence."""

    name = "laplace_noise_regression"
    Data = RawData

    def build(self, x: Tensor, w: Tensor, z: Tensor, sigma: Tensor, is_regression: Tensor) -> RawBatch:
        """``z`` arrives standard normal; map it through the normal CDF to a unit-variance Laplace draw."""
        u = 0.5 * torch.erfc(-z / math.sqrt(2)) - 0.5  # uniform on (−½, ½)
        laplace = -torch.sign(u) * torch.log1p(-2 * u.abs()) / math.sqrt(2)
        return super().build(x, w, laplace, sigma, is_regression)

    def conditional_mean(self, batch: RawBatch) -> Tensor:
        """``[B, N]``: E[y | x, w] = xᵀw/√d (the Laplace noise has mean 0), so ``training.target:
        conditional_mean`` (the presets' target) applies. A family that makes its own labels says their mean
        itself; training refuses the option for one that does not."""
        return (batch.x @ batch.w.unsqueeze(-1)).squeeze(-1) / math.sqrt(batch.x.shape[-1])


if __name__ == "__main__":
    from selectlens.config import load_config
    from selectlens.evaluate import evaluate_model, write_eval
    from selectlens.interpret.report import interpret_run
    from selectlens.rundir import load_run_model, read_jsonl
    from selectlens.train import train

    out = sys.argv[1] if len(sys.argv) > 1 else "runs/laplace"
    cfg = load_config("mixed_noise_cpu", ["data.task=my_task:LaplaceNoiseTask", "training.epochs=4"])
    train(cfg, out, force=True)
    model, cfg = load_run_model(out)
    write_eval(__import__("pathlib").Path(out), evaluate_model(model, cfg), read_jsonl(f"{out}/metrics.jsonl"))
    print("report:", interpret_run(out)["html"])
