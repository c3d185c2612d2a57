"""The training-curve panel: the paired difference (best honest baseline − model) per epoch,
smoothed with a band, checked against a direct numpy computation; the PNG has both panels."""

import numpy as np
import pytest

from selectlens.evaluate.runner import curve_baseline, plot_training_curves, smoothed_difference


def _metrics(n=40, seed=0):
    rng = np.random.default_rng(seed)
    model = 0.30 - 0.002 * np.arange(n) + rng.normal(0, 0.01, n)
    return [{"epoch": i + 1, "sequences": 240 * (i + 1), "train_loss": 0.3, "test_loss": float(model[i]),
             "baselines": {"context_validation_select": float(0.25 + rng.normal(0, 0.01)),
                           "softmax_ensemble": float(0.26 + rng.normal(0, 0.01)),
                           "oracle_select": 0.2}} for i in range(n)]


@pytest.mark.parametrize("window", [1, 4, 7])
def test_smoothed_difference_matches_numpy(window):
    metrics = _metrics()
    seqs, diff, mean, half = smoothed_difference(metrics, "softmax_ensemble", window)
    d = np.array([m["baselines"]["softmax_ensemble"] - m["test_loss"] for m in metrics])
    assert np.array_equal(seqs, 240 * np.arange(1, 41)) and np.allclose(diff, d)
    for i in range(len(d)):
        w = d[max(0, i - window + 1) : i + 1]
        assert mean[i] == pytest.approx(np.mean(w))
        assert half[i] == pytest.approx(1.96 * np.std(w, ddof=1) / np.sqrt(len(w)) if len(w) > 1 else 0.0)


def test_curve_baseline_is_evals_best_honest_else_context_validation():
    metrics = _metrics()
    assert curve_baseline(metrics, {"tables": {"mse": {"best_honest": "softmax_ensemble"}}}) == "softmax_ensemble"
    assert curve_baseline(metrics, None) == "context_validation_select"
    for m in metrics:
        del m["baselines"]["context_validation_select"]
    assert curve_baseline(metrics, None) == "softmax_ensemble"  # never the oracle, though it is lowest


def test_plot_has_the_difference_and_the_raw_panels(tmp_path):
    import matplotlib.pyplot as plt

    out = plot_training_curves(_metrics(), tmp_path / "c.png")
    img = plt.imread(out)
    assert img.shape[0] > img.shape[1]  # two panels stacked: taller than wide
