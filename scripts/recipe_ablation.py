"""The raw-data recipe ablation: each ingredient of the mixed-noise recipe, changed one at a time, × seeds.

Every arm trains with ``selectlens train`` and scores with ``selectlens eval`` (20,000 held-out
sequences), so its eval.json carries, per σ and n, the excess risk over the Bayes mixture with its
CI and the best single-λ ridge's excess. Arms run in parallel, ``--jobs`` at a time, each process on
one thread. A deadline (``--minutes``) caps every training with ``--max-minutes``: a capped run says
so (its metrics.jsonl holds the sequences it reached), it is never passed off as the full budget.

    python scripts/recipe_ablation.py --out runs/ablation [--device cuda] [--jobs 16] [--minutes 8]
        [--arms base,batch256,...] [--seeds 0,1,2] [--skip-done]
    python scripts/results_tables.py docs/results.md --table recipe runs/ablation   # the table docs/results.md shows

The recipe (``base``) is the ``mixed_noise_cpu`` preset as it was when the ablation ran (batch 512, lr 3e-3,
the observed target, uniform position weights, 110 epochs): every arm pins it (``earlier``), so the arms
and their table stay what they were when the preset moves on; ``batch256_*`` and
``batch64_*`` arms change the batch (and peak lr) first; ``--scale`` multiplies every arm's sequence
budget (a quick check of the script: ``--scale 0.01``).

An ``--out`` that already holds any of the asked runs (or an ablation.json) is refused, so a second
call never replaces finished runs. ``--skip-done`` keeps every run that finished (rc 0 and an eval.json)
and its entry in ablation.json, and trains only the others (an unfinished run directory is started
again; one that trained all its epochs but whose eval did not finish is only evaluated); a kept run
trained for other epochs than this call asks (another ``--scale``) is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# arm -> (config, overrides, epochs relative to the recipe's); every arm starts from the recipe the ablation was
# run on, the preset before the conditional-mean target and the position weights became part of it
EARLIER = ["training.target=observed", "training.position_weights=uniform"]
# linear_or_logistic_cpu has since moved to p_regression 0.75 and Bayes-risk weights at β = 0.5: its arms pin 0.5 and 1
EARLIER_BY_CONFIG = {"linear_or_logistic_cpu": ["data.p_regression=0.5", "training.bayes_risk_power=1"]}
EARLIER_EPOCHS = 110  # 1.98M sequences
B256 = ["training.batch_size=256", "training.lr=0.002"]
B64 = ["training.batch_size=64", "training.lr=0.001"]
CURRICULUM = "training.curriculum={d_start: 2, d_inc: 1, n_start: 5, n_inc: 3, every: %d}"
TARGET_MEAN = "training.target=conditional_mean"
WEIGHTED = "training.position_weights=inverse_reference"
LONG = 125 / 110
SIGMA = {"sigma0.1_only": ["data.noise_levels=[0.1]"], "sigma0.5_only": ["data.noise_levels=[0.5]"]}
ARMS: dict[str, tuple[str, list[str], float]] = {
    # the preset (batch 512, lr 3e-3) and the three-model σ experiment, the linear-or-logistic task with it
    "base": ("mixed_noise_cpu", [], 1.0),
    **{k: ("mixed_noise_cpu", v, 1.0) for k, v in SIGMA.items()},
    "linear_or_logistic": ("linear_or_logistic_cpu", [], 1.0),
    # the training objective's noise: the label's mean given w as the target (same minimiser), and a batch twice
    # the preset's (half the steps), the two ways of a less noisy gradient
    "target_mean": ("mixed_noise_cpu", [TARGET_MEAN], 1.0),
    **{f"target_mean_{k}": ("mixed_noise_cpu", [TARGET_MEAN, *v], 1.0) for k, v in SIGMA.items()},
    "target_mean_linear_or_logistic": ("linear_or_logistic_cpu", [TARGET_MEAN], 1.0),
    "batch1024": ("mixed_noise_cpu", ["training.batch_size=1024", "training.lr=0.004", "training.warmup_steps=250"], 1.0),
    # the 30-minute cap's room: 125 epochs (2.25M sequences) with the noise-free target; and the positions' loss
    # weighted by 1 / the Bayes mixture's risk there (the late positions, where selection happens, count more):
    # target_mean_weighted is the preset of today
    "target_mean_long": ("mixed_noise_cpu", [TARGET_MEAN], LONG),
    "target_mean_long_linear_or_logistic": ("linear_or_logistic_cpu", [TARGET_MEAN], LONG),
    "target_mean_weighted": ("mixed_noise_cpu", [TARGET_MEAN, WEIGHTED], LONG),
    "target_mean_weighted_linear_or_logistic": ("linear_or_logistic_cpu", [TARGET_MEAN, WEIGHTED], LONG),
    # batch 256: the same sequences in twice the steps
    "batch256": ("mixed_noise_cpu", B256, 1.0),
    "batch256_lr1e-3": ("mixed_noise_cpu", [*B256, "training.lr=0.001"], 1.0),
    "batch256_curriculum": ("mixed_noise_cpu", [*B256, CURRICULUM % 250], 1.0),
    **{f"batch256_{k}": ("mixed_noise_cpu", [*B256, *v], 1.0) for k, v in SIGMA.items()},
    "batch256_linear_or_logistic": ("linear_or_logistic_cpu", B256, 1.0),
    # batch 64 (8x the preset's steps) and its ablations
    "batch64": ("mixed_noise_cpu", B64, 1.0),
    "batch64_lr3e-4": ("mixed_noise_cpu", [*B64, "training.lr=0.0003"], 1.0),
    "batch64_curriculum": ("mixed_noise_cpu", [*B64, CURRICULUM % 1000], 1.0),
    # same CPU minutes: interleaved tokens cost twice as much per sequence, a 64-wide model half
    "batch64_interleaved": ("mixed_noise_cpu", [*B64, "data.layout=interleaved"], 0.5),
    "batch64_width64": ("mixed_noise_cpu", [*B64, "model.n_embd=64"], 2.0),
    "batch64_long": ("mixed_noise_cpu", B64, 2.0),  # twice the sequences: is the budget what binds?
    **{f"batch64_{k}": ("mixed_noise_cpu", [*B64, *v], 1.0) for k, v in SIGMA.items()},
    "batch64_linear_or_logistic": ("linear_or_logistic_cpu", B64, 1.0),
}


def earlier(config: str) -> list[str]:
    """The overrides that pin ``config`` to the recipe the ablation ran on."""
    return EARLIER + EARLIER_BY_CONFIG.get(config, [])


def _one(arm: str, seed: int, args, deadline: float) -> dict:
    config, sets, factor = ARMS[arm]
    run = args.out / f"{arm}_s{seed}"
    epochs = _asked_epochs(arm, args)
    minutes = max(0.2, (deadline - time.time()) / 60 - args.eval_minutes)
    cmd = [sys.executable, "-m", "selectlens", "train", "--config", config, "--out", str(run), "--seed", str(seed),
           "--device", args.device, "--quiet", "--force", "--max-minutes", f"{minutes:.2f}",
           "--set", f"training.epochs={epochs}", *[a for s in earlier(config) + sets for a in ("--set", s)], *args.set]
    t0 = time.time()
    trained = args.skip_done and _trained(run, epochs)  # its eval was stopped: evaluate, do not train again
    with open(args.out / f"{arm}_s{seed}.log", "a" if trained else "w") as log:
        rc = 0 if trained else subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        train_s = time.time() - t0
        if rc == 0:
            rc = subprocess.call([sys.executable, "-m", "selectlens", "eval", "--run", str(run), "--device", args.device],
                                 stdout=log, stderr=subprocess.STDOUT)
    # train_s None: trained by an earlier call, this one only evaluated it
    done = {"arm": arm, "seed": seed, "rc": rc, "train_s": None if trained else round(train_s, 1), "epochs_asked": epochs}
    print(json.dumps(done), flush=True)
    return done


def _finished(args, jobs: list[tuple[str, int]]) -> tuple[list[dict], dict] | str:
    """What --skip-done keeps, or the error: every run in --out that finished (rc 0 and an eval.json) with its
    ablation.json entry (arms this call does not ask for stay in the book too), and the old book."""
    taken = sorted(f"{a}_s{s}" for a, s in jobs if (args.out / f"{a}_s{s}").exists())
    book_path = args.out / "ablation.json"
    if not args.skip_done:
        if taken or book_path.exists():
            what = ", ".join(taken[:4]) + (" …" if len(taken) > 4 else "") if taken else "ablation.json"
            return (f"--out {args.out} already holds {what}; pass --skip-done to keep the finished runs and "
                    f"train the rest, or choose a new --out")
        return [], {}
    try:
        book = json.loads(book_path.read_text()) if book_path.exists() else {"runs": []}
        entries = {(r["arm"], r["seed"]): r for r in book["runs"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{book_path}: not an ablation book ({type(err).__name__}); move it away or choose a new --out"
    for job in jobs:  # a finished run the book lacks (a call stopped before it wrote the book)
        entries.setdefault(job, {"arm": job[0], "seed": job[1], "rc": 0})
    kept = [r for (a, s), r in entries.items() if r.get("rc") == 0 and (args.out / f"{a}_s{s}" / "eval.json").exists()]
    for r in kept:  # a kept run must be the run this call would train: same epochs (so same --scale)
        if (r["arm"], r["seed"]) in jobs:
            try:
                cfg = json.loads((args.out / f"{r['arm']}_s{r['seed']}" / "config.json").read_text())
                epochs = cfg["training"]["epochs"]
            except (OSError, ValueError, KeyError, TypeError):
                epochs = None
            if epochs != _asked_epochs(r["arm"], args):
                return (f"{args.out / (r['arm'] + '_s' + str(r['seed']))} was trained for {epochs} epochs, this call "
                        f"asks {_asked_epochs(r['arm'], args)} (another --scale?); choose a new --out")
    return kept, book


def _trained(run: Path, epochs: int) -> bool:
    """Training ran all the epochs this call asks (its metrics.jsonl holds the last one): only the eval is
    missing. A run stopped earlier (killed, or capped by a deadline) is trained again."""
    try:
        cfg = json.loads((run / "config.json").read_text())
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return cfg["training"]["epochs"] == epochs and bool(lines) and json.loads(lines[-1])["epoch"] == epochs
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _asked_epochs(arm: str, args) -> int:
    factor = ARMS[arm][2]
    return max(1, round(EARLIER_EPOCHS * factor * args.scale))


def _write_book(args, argv: list[str], done: list[dict], old: dict) -> None:
    """ablation.json, rewritten whole (temporary file, then rename) after every finished run; the commands and
    devices of earlier calls into the same --out (--skip-done) are kept in front of this one's."""
    command = " ".join(["python", "scripts/recipe_ablation.py", *argv])
    devices = [*filter(None, old.get("device", "").split(", ")), args.device]
    book = {"device": ", ".join(dict.fromkeys(devices)), "command": "; ".join(filter(None, [old.get("command"), command])),
            "runs": done}
    tmp = args.out / "ablation.json.tmp"
    tmp.write_text(json.dumps(book, indent=2))
    os.replace(tmp, args.out / "ablation.json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--minutes", type=float, default=600.0, help="deadline for every training (eval after it)")
    p.add_argument("--eval-minutes", type=float, default=1.0, help="kept free for the eval after the deadline")
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--set", action="append", default=[], help="an override for every arm (--set KEY=VALUE)")
    p.add_argument("--skip-done", action="store_true", help="keep the finished runs in --out, train the rest")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.set = [a for s in args.set for a in ("--set", s)]
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        print(f"error: unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}", file=sys.stderr)
        return 2
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"error: --seeds {args.seeds}: not a comma-separated list of integers", file=sys.stderr)
        return 2
    if args.jobs < 1 or args.scale <= 0 or any(s < 0 for s in seeds):
        print("error: --jobs must be >= 1, --scale > 0 and every seed >= 0", file=sys.stderr)
        return 2
    jobs = [(a, s) for a in arms for s in seeds]
    found = _finished(args, jobs)
    if isinstance(found, str):
        print(f"error: {found}", file=sys.stderr)
        return 2
    done, old = found
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    deadline = time.time() + 60 * args.minutes
    kept = {(r["arm"], r["seed"]) for r in done}
    lock = threading.Lock()

    order = {j: i for i, j in enumerate(jobs)}

    def one(job):
        result = _one(*job, args, deadline)
        with lock:
            done.append(result)
            _write_book(args, argv, sorted(done, key=lambda r: order.get((r["arm"], r["seed"]), -1)), old)
        return result

    if done:  # the kept runs are in the book even if nothing is left to train
        _write_book(args, argv, done, old)

    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one, [j for j in jobs if j not in kept]))
    return 0 if all(d["rc"] == 0 for d in results) else 1


if __name__ == "__main__":
    sys.exit(main())
