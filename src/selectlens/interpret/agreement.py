"""Algorithm agreement on raw-data runs (Akyürek et al. 2022): which estimator does the model track?

At every context length n (the prediction at x-token n, from n earlier pairs), per noise level
and task type, the mean squared distance between the model's predictions and each baseline's
predictions — not the target — with a 95% CI over sequences:
``dist_k(n) = mean_b (ŷ_model[b, n] − ŷ_k[b, n])²``.

Two nulls beside it: the constant prior-mean predictor 0 as one more "baseline"
(``prior_mean_zero``: a model that barely reacts to the context is close to every shrunken
estimator, and closest to this one), and the distance from each baseline to the Bayes posterior
mixture (``baseline_to_reference``). A model "tracks" estimator k at n only if its distance to k
is small compared with how far the candidate estimators are from each other.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from selectlens.baselines import suite_for
from selectlens.evaluate.context_length import curve_ci

ZERO = "prior_mean_zero"  # the null predictor ŷ = 0


def agreement_result(model_pred: Tensor, baseline_preds: dict[str, Tensor], batch_groups: dict[str, Tensor],
                     sees: dict[str, str], reference: str) -> dict[str, Any]:
    """Distances from ``model_pred [B, N]`` to every ``baseline_preds[name] [B, N]`` on ``batch`` (a ``RawBatch``).

    Returns ``{"N", "sees", "groups": {g: {"sequences", "distance": {name: curve},
    "baseline_to_reference": {name: curve}, "closest": [name per n]}}}``; a curve is per-position
    ``mean``/``ci_low``/``ci_high`` lists. ``closest`` is the baseline with the smallest mean distance
    (at n = 0 every predictor says 0: a tie, resolved to the first name).
    """
    model = model_pred.detach().cpu().double()
    preds = {name: p.detach().cpu().double() for name, p in baseline_preds.items()}
    preds[ZERO] = torch.zeros_like(model)
    groups: dict[str, Any] = {}
    for g, mask in batch_groups.items():
        mask = mask.cpu()
        dist = {name: curve_ci((model[mask] - p[mask]) ** 2) for name, p in preds.items()}
        others = [name for name in preds if name not in (reference, ZERO)] if reference in preds else []
        spread = {name: curve_ci((preds[reference][mask] - preds[name][mask]) ** 2) for name in others}
        means = torch.tensor([dist[name]["mean"] for name in preds])  # [K, N]
        closest = [list(preds)[k] for k in means.argmin(0).tolist()]
        groups[g] = {"sequences": int(mask.sum()), "distance": dist, "baseline_to_reference": spread, "closest": closest}
    sees = {name: "null" if name == ZERO else sees.get(name, "other") for name in preds}
    return {"N": model.shape[1], "sees": sees, "reference": reference, "groups": groups}


@torch.no_grad()
def algorithm_agreement(model: Any, task: Any, batch: Any) -> dict[str, Any]:
    """Run the model and every baseline of ``task``'s suite on ``batch``; see ``agreement_result``."""
    suite = suite_for(task)
    fit = suite.fit(0, 0)
    preds = {name: fn(batch) for name, fn in suite.predictors(fit).items()}
    sees = {name: suite.sees(name) for name in preds}
    return agreement_result(model.predict_positions(batch.tokens, task.readout), preds, task.groups(batch), sees,
                            suite.reference(fit))


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
            style = {"latent": ":", "null": "--"}.get(result["sees"][name], "-")
            color = "gray" if name == ZERO else cmap(i % 10)
            ax.plot(n, c["mean"], style, color=color, lw=1.4, label=name)
            ax.fill_between(n, c["ci_low"], c["ci_high"], color=color, alpha=0.15, lw=0)
            lows += [v for v in c["mean"] if v > 0]
        ax.set_yscale("log")
        if lows:
            ref = res["distance"].get(result.get("reference", ""), {"mean": lows})["mean"]
            ax.set_ylim(0.7 * min(lows), 10 * max(ref))
        ax.set_xlabel("in-context examples n")
        ax.set_title(f"{g} ({res['sequences']} sequences)", fontsize=10)
    axes[0][0].set_ylabel("mean (model − baseline)²")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Algorithm agreement: which estimator the model tracks (95% CI bands; dotted = sees latent σ/type; "
                 "gray dashed = the null ŷ = 0)",
                 fontsize=10)
    fig.tight_layout()
    return fig
