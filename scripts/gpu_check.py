"""GPU checks and benchmarks in one run (for a lent GPU machine): writes JSON to $OUT or ./gpu_results.

    PYTHONPATH=src python scripts/gpu_check.py [STEP ...]
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

out_dir = Path(os.environ.get("OUT", "gpu_results"))
out_dir.mkdir(parents=True, exist_ok=True)
results: dict = {"torch": torch.__version__, "cuda": torch.cuda.is_available()}
if not torch.cuda.is_available():
    print("no CUDA device"); sys.exit(1)
dev = torch.device("cuda")
results["device"] = torch.cuda.get_device_name(dev)


def save():
    (out_dir / "gpu_results.json").write_text(json.dumps(results, indent=2))


def step(name, fn):
    t0 = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as e:  # keep going: every check reports
        results[name] = {"error": f"{type(e).__name__}: {e}"}
    results[name + "_wall_s"] = time.perf_counter() - t0
    print(name, json.dumps(results[name])[:400], flush=True)
    save()


def fitting_vs_sklearn():
    from sklearn.linear_model import LogisticRegression, Ridge

    from selectlens.tasks import logistic_probabilities, ridge_predictions

    g = torch.Generator(device=dev).manual_seed(0)
    X = torch.randn(64, 21, 5, generator=g, device=dev)
    y = (X @ torch.randn(64, 5, 1, generator=g, device=dev)).squeeze(-1) + 0.3 * torch.randn(64, 21, generator=g, device=dev)
    P = ridge_predictions(X, y, X, [0.1, 0.8]).cpu().double().numpy()
    Xn, yn = X.cpu().double().numpy(), y.cpu().double().numpy()
    ridge_err = max(abs(Ridge(alpha=a).fit(Xn[b], yn[b]).predict(Xn[b]) - P[b, :, k]).max()
                    for b in range(64) for k, a in enumerate([0.1, 0.8]))
    Xc = torch.randn(32, 64, 16, generator=g, device=dev)
    yc = torch.bernoulli(torch.sigmoid((Xc @ torch.randn(32, 16, 1, generator=g, device=dev)).squeeze(-1)), generator=g)
    yc[:, 0], yc[:, 1] = 0, 1
    Cs = [0.125, 0.25, 0.5, 1, 2, 4, 8]
    Q = logistic_probabilities(Xc, yc, Xc, Cs).cpu().double().numpy()
    Xcn, ycn = Xc.cpu().double().numpy(), yc.cpu().numpy()
    errs = []
    for b in range(32):
        for k, c in enumerate(Cs):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = LogisticRegression(C=c, tol=1e-8, max_iter=10000).fit(Xcn[b], ycn[b])
            errs.append(abs(m.predict_proba(Xcn[b])[:, 1] - Q[b, :, k]).max())
    return {"ridge_max_abs_err": float(ridge_err), "logistic_max_abs_err": float(max(errs))}


def model_cuda_vs_cpu():
    from selectlens.model import ModelSpec, SelectionTransformer

    torch.manual_seed(0)
    m = SelectionTransformer(ModelSpec(n_features=3, n_positions=21)).eval()
    X = torch.randn(256, 21, 3)
    with torch.no_grad():
        cpu = m.predict(X)
        gpu = m.to(dev).predict(X.to(dev)).cpu()
    return {"max_abs_diff": float((cpu - gpu).abs().max())}


def bench_datagen(task):
    from selectlens.benchmarks.datagen import bench_datagen as run
    from selectlens.config import load_config

    cfg = load_config("model_selection" if task == "regression" else "classification")
    return run(cfg, device="cuda")


def bench_datagen_big(task):
    from selectlens.benchmarks.datagen import bench_datagen as run
    from selectlens.config import load_config

    cfg = load_config("model_selection" if task == "regression" else "classification")
    r = run(cfg, device="cuda", sequences=200000 if task == "regression" else 50000, reference_sequences_count=50)
    return {"sequences": r["sequences"], "ours_seq_per_s": r["ours_seq_per_s"]}


def bench_train():
    from selectlens.benchmarks.train import bench_train as run

    return run(device="cuda", reference_sequences_count=600)


def short_training():
    import tempfile

    from selectlens.config import load_config
    from selectlens.evaluate import evaluate_model
    from selectlens.rundir import load_run_model
    from selectlens.train import train

    cfg = load_config("default", ["device=cuda", "training.epochs=40", "training.save_every_epochs=20"])
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        r = train(cfg, Path(d) / "run", progress=False)
        secs = time.perf_counter() - t0
        model, c = load_run_model(Path(d) / "run", device="cuda")
        ev = evaluate_model(model, c)
    p = ev["predictors"]
    return {"epochs": r.epoch, "train_s": secs, "s_per_epoch": secs / r.epoch,
            "model_mse": p["model"]["mse"], "cv_mse": p["context_validation_select"]["mse"],
            "cv_minus_model_ci": p["context_validation_select"]["paired_diff_ci"]}


def resume_on_cuda():
    import tempfile

    from safetensors.torch import load_file

    from selectlens.config import load_config
    from selectlens.train import train

    cfg = load_config("default", ["device=cuda", "training.epochs=4", "training.save_every_epochs=1",
                                  "data.train_samp_per_class=2000"])
    with tempfile.TemporaryDirectory() as d:
        train(cfg, Path(d) / "full", progress=False)
        train(cfg, Path(d) / "part", progress=False, max_minutes=1e-9)
        train(cfg, Path(d) / "part", resume=True, progress=False)
        a, b = load_file(Path(d) / "full" / "model.safetensors"), load_file(Path(d) / "part" / "model.safetensors")
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        same_metrics = (Path(d) / "full" / "metrics.jsonl").read_text() == (Path(d) / "part" / "metrics.jsonl").read_text()
    return {"max_abs_weight_diff_resumed_vs_uninterrupted": diff, "metrics_identical": same_metrics}


STEPS = {
    "fitting_vs_sklearn": fitting_vs_sklearn,
    "model_cuda_vs_cpu": model_cuda_vs_cpu,
    "bench_datagen_regression": lambda: bench_datagen("regression"),
    "bench_datagen_classification": lambda: bench_datagen("classification"),
    "bench_datagen_regression_large_batch": lambda: bench_datagen_big("regression"),
    "bench_datagen_classification_large_batch": lambda: bench_datagen_big("classification"),
    "bench_train": bench_train,
    "short_training": short_training,
    "resume_on_cuda": resume_on_cuda,
}
for name in sys.argv[1:] or list(STEPS):
    step(name, STEPS[name])
print("done", flush=True)
