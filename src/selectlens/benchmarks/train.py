"""``selectlens bench train``: sequences/s of a full epoch (data generation +
training steps), SelectLens on the default config against the original
pipeline's pattern, in the same run (any config; the reference exists for the
original project's selection tasks only, elsewhere the figures stand alone).

The reference generates each sequence with scikit-learn in a Python loop and
trains Hugging Face ``GPT2Model`` (with its full token table) at batch 32, as
the original did. Its cost per sequence does not depend on the epoch size, so
it is timed on a slice of an epoch to keep the benchmark short.

It also says how well the step uses the machine: FLOPs per training sequence
(``FlopCounterMode``, forward + backward) times training sequences/s gives the
achieved GFLOP/s, shown as a fraction of a 1024×1024 fp32 matmul's GFLOP/s
measured in the same run on the same threads; a ``torch.profiler`` split says
where the step's wall time goes (matmul kernels, other kernels, the optimizer,
Python/autograd/dispatch overhead).
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from selectlens.benchmarks import sync
from selectlens.benchmarks.reference import original_model, reference_sequences
from selectlens.config import Config, load_config
from selectlens.tasks import make_generator, make_task
from selectlens.train.loop import build_model, loss_fn, loss_weights, make_optimizer, sequence_weights, weight_rows


MATMUL_OPS = frozenset({"aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"})
PROFILE_PARTS = ("matmuls", "other_kernels", "optimizer", "python_dispatch")


class TrainBench:
    """The training step as ``selectlens train`` runs it (optimizer, compile option, loss and its position
    weights), on one epoch's worth of fresh sequences; against the observed target (the conditional mean costs
    the same)."""

    def __init__(self, config: Config, device: torch.device):
        self.config, self.device = config, device
        self.task = make_task(config, device=device)
        self.gen = make_generator(config.seed, device)
        self.model = build_model(config).to(device).train()
        self.opt = make_optimizer(self.model, config)
        if config.training.compile:  # inductor's C++ kernels show in the profile under their own names
            import torch._inductor.config

            torch._inductor.config.cpp.enable_kernel_profile = True
        self.loss = loss_fn(config)
        self.weights, self.risk_scale = loss_weights(config, self.task)
        self.n = config.data.train_samp_per_class
        self.n_train = int(round(config.data.train_prop * self.n))
        self.bs = config.training.batch_size

    def step(self, tokens: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> None:
        loss = self.loss(self.model, tokens, target, weights)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def epoch(self) -> float:
        """Seconds for one epoch: fresh data + steps over the training split."""
        sync(self.device)
        t0 = time.perf_counter()
        batch = self.task.sample(self.n, self.gen)
        weights = self.batch_weights(batch)  # the prefix risk is part of an epoch's cost, as in training
        for i in range(0, self.n_train, self.bs):
            rows = slice(i, i + self.bs)
            self.step(batch.tokens[rows], batch.target[rows], weight_rows(weights, rows))
        sync(self.device)
        return time.perf_counter() - t0

    def full_batch(self):
        batch = self.task.sample(self.bs, self.gen)
        return batch.tokens, batch.target, self.batch_weights(batch)

    def batch_weights(self, batch):
        return sequence_weights(self.weights, self.task, batch, risk_scale=self.risk_scale,
                                training=self.config.training)

    def flops_per_sequence(self) -> float:
        """Forward + backward FLOPs of one training sequence, counted by ``FlopCounterMode``
        (it counts the matmuls; the fused CPU attention kernel adds ~5% it does not count)."""
        model = build_model(self.config).to(self.device).train()  # eager, untouched by the bench's optimizer
        tokens, target, weights = self.full_batch()
        with FlopCounterMode(display=False) as counter:
            loss_fn(self.config, compiled=False)(model, tokens, target, weights).backward()
        return counter.get_total_flops() / tokens.shape[0]

    def profile_split(self, steps: int = 10) -> dict[str, float]:
        """Fractions of the profiled steps' wall time: matmul kernels, other kernels,
        the optimizer step, and the rest (Python, autograd and dispatcher overhead)."""
        tokens, target, weights = self.full_batch()
        self.step(tokens, target, weights)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            sync(self.device)
            t0 = time.perf_counter()
            for _ in range(steps):
                self.step(tokens, target, weights)
            sync(self.device)
            wall_us = (time.perf_counter() - t0) * 1e6
        return _split(prof.events(), wall_us)


def _in_optimizer(event) -> bool:
    while event is not None:
        if event.name.startswith("Optimizer.step"):
            return True
        event = event.cpu_parent
    return False


def _split(events, wall_us: float) -> dict[str, float]:
    """Attribute each ATen operator's and each inductor C++ kernel's (``graph_*_cpp_fused_*``)
    self time to matmuls or other kernels,
    everything under ``Optimizer.step`` to the optimizer, and the rest of the wall time
    (Python, autograd engine, dispatcher) to Python/dispatch."""
    parts = dict.fromkeys(PROFILE_PARTS, 0.0)
    for ev in events:
        if ev.cpu_parent is None and ev.name.startswith("Optimizer.step"):
            parts["optimizer"] += ev.cpu_time_total
        elif (ev.name.startswith("aten::") or "cpp_fused" in ev.name) and not _in_optimizer(ev):
            parts["matmuls" if ev.name in MATMUL_OPS else "other_kernels"] += ev.self_cpu_time_total
    parts["python_dispatch"] = max(0.0, wall_us - sum(parts.values()))
    return {k: v / wall_us for k, v in parts.items()}


def matmul_gflops(n: int = 1024, repeats: int = 10, device: torch.device = torch.device("cpu")) -> float:
    """GFLOP/s of an ``n × n`` fp32 matmul on ``device`` and the current threads (median of
    ``repeats``): the machine's own attainable rate, the yardstick for the step's fraction."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def ours_epoch_seconds(bench: TrainBench, epochs: int = 2) -> tuple[float, float]:
    """(first epoch's seconds — includes compilation when ``training.compile`` —, median of the next ``epochs``)."""
    first = bench.epoch()
    return first, statistics.median(bench.epoch() for _ in range(epochs))


def reference_seconds(config: Config, n_sequences: int, batch_size: int = 32) -> float:
    """Wall time of the original pattern on ``n_sequences``: sklearn data + HF GPT-2 at batch 32, CPU."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = original_model(config.data.n_features, config.data.N, config.model.n_embd,
                               config.model.n_layer, config.model.n_head).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.training.lr)
    t0 = time.perf_counter()
    data = reference_sequences(config.data, n_sequences, seed=config.seed)
    n_train = int(round(config.data.train_prop * data["tokens"].shape[0]))
    for i in range(0, n_train, batch_size):
        pred = model(data["tokens"][i : i + batch_size])
        loss = ((pred - data["target"][i : i + batch_size]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def bench_train(config: Config | None = None, *, device: str = "cpu", reference_sequences_count: int = 1000) -> dict:
    """Sequences/s of a training epoch and the reference's, achieved GFLOP/s against a
    1024² matmul measured in the same run, and where the step's time goes."""
    cfg = config or load_config("default")
    dev = torch.device(device)
    bench = TrainBench(cfg, dev)
    first_s, ours_s = ours_epoch_seconds(bench)
    flops = bench.flops_per_sequence()
    split = bench.profile_split()
    peak = matmul_gflops(device=dev)
    n = cfg.data.train_samp_per_class
    ours = n / ours_s
    if bench.task.has_original_pipeline:  # the original project's pattern exists for its own tasks only
        ref_s = reference_seconds(cfg, reference_sequences_count)
        n_ref = int(reference_sequences_count // len(cfg.data.data_alphas) * len(cfg.data.data_alphas))
        ref = n_ref / ref_s
    else:
        n_ref, ref = 0, float("nan")
    achieved = flops * bench.n_train / ours_s / 1e9
    return {
        "config": "default" if config is None else "custom",
        "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "torch_threads": torch.get_num_threads(),
        "compile": cfg.training.compile,
        "fused_adam": cfg.training.fused_adam,
        "target": cfg.training.target,
        "position_weights": cfg.training.position_weights,
        "sequences_per_epoch": n,
        "train_sequences_per_epoch": bench.n_train,
        "batch_size": cfg.training.batch_size,
        "task": cfg.data.task,
        "layout": bench.task.layout,
        "n_embd": cfg.model.n_embd,
        "n_layer": cfg.model.n_layer,
        "reference_sequences": n_ref,
        "reference_batch_size": 32,
        "first_epoch_s": first_s,
        "ours_epoch_s": ours_s,
        "ours_seq_per_s": ours,
        "reference_seq_per_s": ref,
        "ratio": ours / ref if ref > 0 and math.isfinite(ref) else float("nan"),
        "flops_per_sequence": flops,
        "achieved_gflops": achieved,
        "matmul_gflops": peak,
        "matmul_fraction": achieved / peak,
        "profile": split,
    }


# ---------------------------------------------------------------------------
# Threads under load: `bench train --contend N`

# The environment of each policy compared, in a fresh process each: libgomp reads its wait policy
# once, when torch loads it. Variables of the calling process's own policy are removed first.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
_STEP_RATE_CHILD = ("import json, sys\nfrom selectlens.benchmarks.train import step_rate\n"
                    "print(json.dumps(step_rate(json.loads(sys.argv[1]), int(sys.argv[2]))))")


def thread_policies() -> dict[str, dict[str, str]]:
    """Name → environment: torch's default (threads = cores, spinning waits), SelectLens's policy
    (:mod:`selectlens.threads`) and one thread."""
    from selectlens.threads import thread_policy_env

    return {"torch default": {}, "selectlens policy": thread_policy_env({}), "1 thread": {"OMP_NUM_THREADS": "1"}}


def step_rate(config: dict, steps: int, warmup: int = 3) -> dict[str, float]:
    """Training steps/s of ``config`` on CPU (one fixed batch, after ``warmup`` steps) and torch's threads."""
    from selectlens.config import config_from_dict

    bench = TrainBench(config_from_dict(config), torch.device("cpu"))
    tokens, target, weights = bench.full_batch()
    for _ in range(warmup):
        bench.step(tokens, target, weights)
    t0 = time.perf_counter()
    for _ in range(steps):
        bench.step(tokens, target, weights)
    return {"steps_per_s": steps / (time.perf_counter() - t0), "threads": torch.get_num_threads()}


def _busy_processes(n: int) -> list:
    import subprocess
    import sys

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _child_step_rate(config: dict, steps: int, env_vars: dict[str, str]) -> dict[str, float]:
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES} | env_vars
    out = subprocess.run([sys.executable, "-c", _STEP_RATE_CHILD, json.dumps(config), str(steps)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_contention(config: Config | None = None, *, contend: int = 1, steps: int = 20) -> dict:
    """Training steps/s of each thread policy (:func:`thread_policies`), alone and beside ``contend``
    busy processes (a Python spin loop each), measured in the same run, one fresh process per
    measurement; ``slowdown`` = alone / beside."""
    cfg = config or load_config("default")
    from selectlens.threads import usable_cores

    result: dict = {"contend": contend, "steps": steps, "batch_size": cfg.training.batch_size,
                    "usable_cores": usable_cores(), "policies": {}}
    for name, env_vars in thread_policies().items():
        alone = _child_step_rate(cfg.to_dict(), steps, env_vars)
        busy = _busy_processes(contend)
        try:
            time.sleep(0.5)
            beside = _child_step_rate(cfg.to_dict(), steps, env_vars)
        finally:
            for p in busy:
                p.kill()
                p.wait()
        result["policies"][name] = {
            "env": env_vars, "threads": alone["threads"], "alone_steps_per_s": alone["steps_per_s"],
            "contended_steps_per_s": beside["steps_per_s"], "slowdown": alone["steps_per_s"] / beside["steps_per_s"]}
    return result


def contention_lines(result: dict) -> list[str]:
    """``bench train --contend``'s table."""
    lines = [f"training steps/s (batch {result['batch_size']}, {result['steps']} steps, {result['usable_cores']} usable "
             f"cores), alone and beside {result['contend']} busy process(es); each in a fresh process"]
    for name, r in result["policies"].items():
        env = " ".join(f"{k}={v}" for k, v in r["env"].items()) or "(no thread variables)"
        lines.append(f"  {name:<18}: {r['alone_steps_per_s']:>8.2f} alone, {r['contended_steps_per_s']:>8.2f} beside "
                     f"busy, slowdown {r['slowdown']:>5.2f}x ({r['threads']} thread{'s' * (r['threads'] != 1)}; {env})")
    return lines
