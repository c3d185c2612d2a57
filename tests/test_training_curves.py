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
    ev = {"reference": "softmax_ensemble", "tables": {"mse": {"best_honest": "softmax_ensemble", "reference": "softmax_ensemble"}}}
    assert curve_baseline(metrics, ev) == "softmax_ensemble"
    assert curve_baseline(metrics, None) == "context_validation_select"
    for m in metrics:
        del m["baselines"]["context_validation_select"]
    assert curve_baseline(metrics, None) == "softmax_ensemble"  # never the oracle, though it is lowest


def _with_warmup(n=60, seed=1):
    """Metrics whose model starts 2 behind the baseline (first tenth of the epochs), then leads by ~0.01."""
    metrics = _metrics(n, seed)
    for i, m in enumerate(metrics):
        b = m["baselines"]["context_validation_select"]
        m["test_loss"] = b + 2.0 * (1 - i / 6) if i < 6 else b - 0.01 - 0.002 * np.sin(i)
    return metrics


def test_the_difference_panel_plots_what_metrics_jsonl_says(tmp_path):
    """The plotted series, band, y-range and last-window CI, against a hand computation from the
    metrics.jsonl file (window = a tenth of the epochs); the PNG has both panels."""
    import json

    import matplotlib.pyplot as plt

    from selectlens.evaluate.runner import training_curves_figure

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(m) + "\n" for m in _with_warmup()))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    x = np.array([r["sequences"] for r in rows], dtype=float)
    d = np.array([r["baselines"]["context_validation_select"] - r["test_loss"] for r in rows])
    k = len(d) // 10
    mean = np.array([d[max(0, i - k + 1) : i + 1].mean() for i in range(len(d))])
    half = np.array([1.96 * d[max(0, i - k + 1) : i + 1].std(ddof=1) / np.sqrt(min(k, i + 1)) if i else 0.0
                     for i in range(len(d))])

    fig = training_curves_figure(rows)
    top = fig.axes[0]
    lines = {line.get_label(): line for line in top.get_lines()}
    assert np.allclose(lines["per epoch"].get_xdata(), x) and np.allclose(lines["per epoch"].get_ydata(), d)
    assert np.allclose(lines["running mean"].get_ydata(), mean)
    band = next(c for c in top.collections if c.get_label() == "±1.96·sd/√window")
    ys = band.get_paths()[0].vertices[:, 1]
    assert np.allclose(np.sort(ys[np.isfinite(ys)])[[0, -1]], [(mean - half).min(), (mean + half).max()])
    # the y-axis spans the epochs after warm-up (per epoch; running windows wholly after it) and 0,
    # not the first tenth's −2
    lo, hi = top.get_ylim()
    w = 6 + k - 1
    after = np.concatenate([d[6:], mean[w:] - half[w:], mean[w:] + half[w:], [0.0]])
    assert lo <= after.min() and hi >= after.max() and hi - lo < 1.2 * (after.max() - after.min())
    assert d[:6].min() < lo
    # the last window's paired CI is marked at the last epoch
    (label, marker), = [(n, l) for n, l in lines.items() if n.startswith("last window")]
    assert np.allclose(marker.get_xdata(), [x[-1], x[-1]])
    assert np.allclose(marker.get_ydata(), [mean[-1] - half[-1], mean[-1] + half[-1]])
    assert label == f"last window: {mean[-1]:+.4f} [{mean[-1] - half[-1]:+.4f}, {mean[-1] + half[-1]:+.4f}]"
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "training sequences"
    plt.close(fig)
    out = plot_training_curves(rows, tmp_path / "c.png")
    assert plt.imread(out).shape[0] > plt.imread(out).shape[1]
