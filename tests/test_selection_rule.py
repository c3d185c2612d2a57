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
