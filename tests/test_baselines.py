import math

import pytest
import torch

from selectlens.baselines import (
    candidate_average, context_errors, context_softmax_ensemble, context_validation_select,
    fit_softmax_temperature, make_baselines, oracle_select, oracle_softmax_ensemble, oracle_softmax_ensemble_original,
    pointwise_loss, true_alpha_candidate,
)
from selectlens.tasks.selection import TaskBatch


def _batch():
    # Two sequences, N = 3, K = 2 candidates. tokens[b, j] = [pred_0, pred_1, y]; last y masked.
    tokens = torch.tensor([
        [[1.0, 2.0, 1.5], [0.0, 1.0, 0.0], [3.0, 5.0, 0.0]],   # ctx errors: c0 (0.25+0)/2=0.125, c1 (0.25+1)/2=0.625
        [[2.0, 2.0, 4.0], [1.0, 3.0, 3.0], [0.5, 1.5, 0.0]],   # c0 (4+4)/2=4, c1 (4+0)/2=2
    ])
    target = torch.tensor([4.6, 0.9])
    z = torch.zeros(2, 3, 1)
    return TaskBatch(tokens=tokens, target=target, alpha=torch.tensor([0.8, 0.1]),
                     x_train=z, y_train=z[..., 0], x_test=z, y_test=z[..., 0], w=torch.zeros(2, 1))


def test_context_errors_by_hand():
    assert torch.allclose(context_errors(_batch(), "mse"), torch.tensor([[0.125, 0.625], [4.0, 2.0]]))


def test_selections_by_hand():
    b = _batch()
    assert torch.allclose(context_validation_select("mse")(b), torch.tensor([3.0, 1.5]))
    assert torch.allclose(candidate_average(b), torch.tensor([4.0, 1.0]))
    # oracle: closest to the target 4.6 -> 5.0 (c1); to 0.9 -> 0.5 (c0, |0.4| < |0.6|)
    assert torch.allclose(oracle_select("mse")(b), torch.tensor([5.0, 0.5]))
    # true alpha: 0.8 -> candidate 0.8 (index 1), 0.1 -> candidate 0.1 (index 0)
    assert torch.allclose(true_alpha_candidate([0.1, 0.8])(b), torch.tensor([5.0, 0.5]))


def test_softmax_ensembles_by_hand():
    b = _batch()
    T = 0.5
    w0 = torch.softmax(torch.tensor([-0.125, -0.625]) / T, 0)
    w1 = torch.softmax(torch.tensor([-4.0, -2.0]) / T, 0)
    expected = torch.stack([w0 @ torch.tensor([3.0, 5.0]), w1 @ torch.tensor([0.5, 1.5])])
    assert torch.allclose(context_softmax_ensemble("mse", T)(b), expected)
    o0 = torch.softmax(-torch.tensor([1.6**2, 0.4**2]), 0) @ torch.tensor([3.0, 5.0])
    o1 = torch.softmax(-torch.tensor([0.4**2, 0.6**2]), 0) @ torch.tensor([0.5, 1.5])
    assert torch.allclose(oracle_softmax_ensemble_original(b), torch.stack([o0, o1]))
    assert torch.allclose(oracle_softmax_ensemble("mse", 1.0)(b), torch.stack([o0, o1]))
    p0 = torch.softmax(-torch.tensor([1.6**2, 0.4**2]) / T, 0) @ torch.tensor([3.0, 5.0])
    assert torch.allclose(oracle_softmax_ensemble("mse", T)(b)[0], p0)


def test_bce_loss_and_oracle_uses_task_loss():
    p, y = torch.tensor([0.9, 0.2]), torch.tensor([1.0, 0.0])
    assert torch.allclose(pointwise_loss(p, y, "bce"), torch.tensor([-math.log(0.9), -math.log(0.8)]))
    with pytest.raises(ValueError):
        pointwise_loss(p, y, "hinge")


@pytest.mark.parametrize("kind", ["mse", "bce"])
def test_temperature_fit_is_optimal_on_a_brute_force_fine_grid(kind):
    from selectlens.config import load_config
    from selectlens.tasks import make_generator, make_task

    cfg = load_config("default" if kind == "mse" else "classification", ["data.N=12", "data.d_d=4"])
    b = make_task(cfg).sample(400, make_generator(3))
    T = fit_softmax_temperature(b, kind)
    errors, preds = context_errors(b, kind).double(), b.tokens[:, -1, :-1].double()
    grid = 10.0 ** torch.linspace(-4, 3, 7001, dtype=torch.float64)  # step 0.001 in log10
    losses = torch.stack([pointwise_loss((torch.softmax(-errors / t, 1) * preds).sum(1), b.target.double(), kind).mean()
                          for t in grid])
    at_T = pointwise_loss(context_softmax_ensemble(kind, T)(b).double(), b.target.double(), kind).mean()
    assert float(at_T) <= float(losses.min()) + 1e-6 * float(losses.min())
    assert 1e-4 < T < 1e3


def test_make_baselines_names_and_signature():
    from selectlens.config import load_config
    from selectlens.tasks import make_generator, make_task

    task = make_task(load_config("model_selection"))
    batch = task.sample(50, make_generator(0))
    from selectlens.baselines import baseline_sees, fit_selection_baselines

    fit = fit_selection_baselines(task, 0, 300)
    bl = make_baselines(task, fit)
    assert set(bl) == {"candidate[0.1]", "candidate[0.8]", "candidate_average", "context_validation_select",
                       "context_softmax_ensemble", "context_stacking", "true_alpha_candidate", "bayes_matched_ridge",
                       "bayes_full_information", "oracle_select", "oracle_softmax_ensemble",
                       "oracle_softmax_ensemble_original"}
    assert {baseline_sees(n) for n in bl} == {"honest", "latent", "oracle", "bound"}
    assert fit.best_honest in bl and baseline_sees(fit.best_honest) == "honest"
    assert fit.train_losses[fit.best_honest] == min(fit.train_losses.values())
    for fn in bl.values():
        assert fn(batch).shape == (50,)
    # the oracle select is a lower bound for every single-candidate predictor
    loss = {k: ((fn(batch) - batch.target) ** 2).mean() for k, fn in bl.items()}
    assert all(loss["oracle_select"] <= loss[k] + 1e-7 for k in ("candidate[0.1]", "candidate[0.8]", "context_validation_select"))
    # a bare temperature (checkpoints from before stacking) still builds the older set
    assert "context_stacking" not in make_baselines(task, 0.1)


def test_classification_has_no_regression_only_baselines():
    from selectlens.config import load_config
    from selectlens.tasks import make_generator, make_task

    task = make_task(load_config("classification", ["data.N=10", "data.d_d=3", "data.data_alphas=[0.5,4]"]))
    from selectlens.baselines import fit_selection_baselines

    for metric in ("mse", "bce"):
        fit = fit_selection_baselines(task, 0, 200, metric)
        bl = make_baselines(task, fit)
        assert "context_stacking" in bl and not {"bayes_matched_ridge", "bayes_full_information"} & set(bl)
        p = bl["context_stacking"](task.sample(30, make_generator(1)))
        assert p.shape == (30,) and bool(((p > 0) & (p < 1)).all())
