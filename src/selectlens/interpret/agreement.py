"""Algorithm agreement on raw-data runs (Akyürek et al. 2022): which estimator does the model track?

At every context length n (the prediction at x-token n, from n earlier pairs), per noise level
and task type, the mean squared distance between the model's predictions and each baseline's
predictions — not the target — with a 95% CI over sequences:
``dist_k(n) = mean_b (ŷ_model[b, n] − ŷ_k[b, n])²``.

The null beside it: the same distance from each baseline to the Bayes posterior mixture
(``baseline_to_reference``). A model "tracks" estimator k at n only if its distance to k is
small compared with how far the candidate estimators are from each other.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from selectlens.baselines.raw import baseline_sees, make_raw_baselines
from selectlens.evaluate.context_length import REFERENCE, curve_ci, sequence_groups


def agreement_result(model_pred: Tensor, baseline_preds: dict[str, Tensor], batch: Any) -> dict[str, Any]:
    """Distances from ``model_pred [B, N]`` to every ``baseline_preds[name] [B, N]`` on ``batch`` (a ``RawBatch``).

    Returns ``{"N", "sees", "groups": {g: {"sequences", "distance": {name: curve},
    "baseline_to_reference": {name: curve}, "closest": [name per n]}}}``; a curve is per-position
    ``mean``/``ci_low``/``ci_high`` lists. ``closest`` is the baseline with the smallest mean distance.
    """
    model = model_pred.detach().cpu().double()
    preds = {name: p.detach().cpu().double() for name, p in baseline_preds.items()}
    groups: dict[str, Any] = {}
    for g, mask in sequence_groups(batch).items():
        mask = mask.cpu()
        dist = {name: curve_ci((model[mask] - p[mask]) ** 2) for name, p in preds.items()}
        spread = ({name: curve_ci((preds[REFERENCE][mask] - p[mask]) ** 2) for name, p in preds.items() if name != REFERENCE}
                  if REFERENCE in preds else {})
        means = torch.tensor([dist[name]["mean"] for name in preds])  # [K, N]
        closest = [list(preds)[k] for k in means.argmin(0).tolist()]
        groups[g] = {"sequences": int(mask.sum()), "distance": dist, "baseline_to_reference": spread, "closest": closest}
    return {"N": model.shape[1], "sees": {name: baseline_sees(name, default="other") for name in preds}, "groups": groups}


@torch.no_grad()
def algorithm_agreement(model: Any, task: Any, batch: Any) -> dict[str, Any]:
    """Run the model (``predict_x_positions``) and every raw baseline of ``task`` on ``batch``; see ``agreement_result``."""
    preds = {name: fn(batch) for name, fn in make_raw_baselines(task).items()}
    return agreement_result(model.predict_x_positions(batch.tokens), preds, batch)


def agreement_figure(result: dict[str, Any]):
    """Squared distance of the model to each baseline vs n, one panel per group (σ level, task type),
    95% CI bands; the Bayes mixture's distance to the others is not drawn (it is in the JSON).
    A pure function of ``agreement_result``'s output; returns a matplotlib Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [g for g in result["groups"] if g != "all"] or ["all"]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, g in zip(axes[0], groups):
        res = result["groups"][g]
        lows = []
        for i, (name, c) in enumerate(res["distance"].items()):
            n = range(len(c["mean"]))
            style = ":" if result["sees"][name] == "latent" else "-"
            ax.plot(n, c["mean"], style, color=cmap(i % 10), lw=1.4, label=name)
            ax.fill_between(n, c["ci_low"], c["ci_high"], color=cmap(i % 10), alpha=0.15, lw=0)
            lows += [v for v in c["mean"] if v > 0]
        ax.set_yscale("log")
        if lows:
            ref = res["distance"].get(REFERENCE, {"mean": lows})["mean"]
            ax.set_ylim(0.7 * min(lows), 10 * max(ref))
        ax.set_xlabel("in-context examples n")
        ax.set_title(f"{g} ({res['sequences']} sequences)", fontsize=10)
    axes[0][0].set_ylabel("mean (model − baseline)²")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Algorithm agreement: which estimator the model tracks (95% CI bands; dotted = sees latent σ/type)",
                 fontsize=10)
    fig.tight_layout()
    return fig
