import pytest
import torch

from selectlens.baselines import context_errors, fit_selection_baselines, make_baselines
from selectlens.config import load_config
from selectlens.interpret.selection_rule import analyze_selection_rule, effective_weight, hull_excursion
from selectlens.tasks import make_generator, make_task


def test_effective_weight_and_hull_by_hand():
    cands = torch.tensor([[1.0, 3.0], [2.0, 2.01], [0.0, 1.0], [0.0, 1.0]])
    pred = torch.tensor([0.3 * 1 + 0.7 * 3, 5.0, 1.5, -0.25])
    a, defined = effective_weight(pred, cands, threshold=0.05)
    assert defined.tolist() == [True, False, True, True]
    assert a[0] == pytest.approx(0.3) and torch.isnan(a[1]) and a[2] == pytest.approx(-0.5) and a[3] == pytest.approx(1.25)
    dist, rel = hull_excursion(pred, cands)
    assert dist.tolist() == pytest.approx([0.0, 2.99, 0.5, 0.25])
    assert rel[2] == pytest.approx(0.5) and rel[3] == pytest.approx(0.25)
    # K > 2: the position between the smallest and the largest candidate
    a3, _ = effective_weight(torch.tensor([2.5]), torch.tensor([[1.0, 5.0, 3.0]]))
    assert a3[0] == pytest.approx(0.375)


def test_rule_of_a_model_that_is_context_validation():
    task = make_task(load_config("default", ["data.N=11"]))
    fit = fit_selection_baselines(task, 0, 300)
    b = task.sample(1500, make_generator(4))
    bl = make_baselines(task, fit)
    pred = bl["context_validation_select"](b)
    r = analyze_selection_rule(pred, b, bl, kind="mse", temperature=fit.temperature)
    assert r.closest_honest == "context_validation_select"
    assert r.agreement["context_validation_select"]["all"][0] == 0.0
    assert r.outside_share[0] == 0.0
    # the model's curve is a step: weight 1 on candidate 1 where its context error is lower, else 0
    for a, c in r.curve.items():
        for lo, hi, (m, _, _) in zip(c["edges"][:-1], c["edges"][1:], c["curves"]["model"]):
            if hi < 0:
                assert m == pytest.approx(1.0)
            elif lo > 0:
                assert m == pytest.approx(0.0)
    # the softmax ensemble's effective weight is exactly the sigmoid of −Δ/T
    soft = bl["context_softmax_ensemble"](b)
    a_soft, ok = effective_weight(soft, b.tokens[:, -1, :-1])
    err = context_errors(b, "mse").double()
    expected = torch.sigmoid(-(err[:, 0] - err[:, 1]) / fit.temperature)
    assert torch.allclose(a_soft[ok], expected[ok], atol=1e-4)


def test_hull_share_and_distances_are_among_the_defined_sequences():
    """Checked against a direct numpy computation on a model that leaves the hull: the headline share and
    distances count only sequences with |ŷ₁ − ŷ₂| > threshold; the all-sequence share is kept apart."""
    import numpy as np

    task = make_task(load_config("default", ["data.N=11"]))
    fit = fit_selection_baselines(task, 0, 300)
    b = task.sample(3000, make_generator(5))
    bl = make_baselines(task, fit)
    pred = bl["context_softmax_ensemble"](b) + 0.05 * torch.randn(3000, generator=torch.Generator().manual_seed(0))
    r = analyze_selection_rule(pred, b, bl, kind="mse", temperature=fit.temperature)
    c = b.tokens[:, -1, :-1].double().numpy()
    p = pred.double().numpy()
    lo, hi = c.min(1), c.max(1)
    defined = np.abs(c[:, 0] - c[:, 1]) > 0.05
    dist = np.maximum(lo - p, 0) + np.maximum(p - hi, 0)
    out = dist > 0
    assert 0.2 < defined.mean() < 0.95 and out[~defined].mean() > out[defined].mean()  # a case where it matters
    assert r.defined_share == pytest.approx(defined.mean())
    share = out[defined].mean()
    half = 1.959963984540054 * out[defined].std(ddof=1) / np.sqrt(defined.sum())
    assert r.outside_share == pytest.approx([share, share - half, share + half])
    assert r.outside_distance[0] == pytest.approx(dist[defined & out].mean())
    assert r.outside_relative[0] == pytest.approx((dist / (hi - lo))[defined & out].mean())
    assert r.outside_share_all[0] == pytest.approx(out.mean())
    assert r.outside_relative_all[0] == pytest.approx((dist / np.maximum(hi - lo, 1e-12))[out].mean())
