"""Fill the marked tables of a docs page from run directories, sweep directories and ``bench --json`` files.

A page marks each table it wants generated; everything between the markers is replaced::

    <!-- table: default -->
    (generated: the table, then a line naming the command and the machine)
    <!-- /table -->

Usage::

    python scripts/results_tables.py docs/results.md --table default runs/default
    python scripts/results_tables.py docs/results.md --table seeds sweeps/seeds --table context-length sweeps/N
    python scripts/results_tables.py docs/benchmarks.md --table cpu bench/*.json --machine "2 idle CPU cores"
    python scripts/results_tables.py docs/results.md --check --table default runs/default   # exit 1 if stale

Only the regions named with ``--table`` are rewritten. What a region shows (its *view*) follows
from its sources, or from ``view=`` in the marker, e.g. ``<!-- table: cls-logloss view=eval metric=bce -->``:

* ``eval`` (run directories): per predictor, what it sees, the loss with its 95% CI and the paired
  95% CI of (baseline − model), from ``eval.json`` (``metric=bce`` for the log-loss table of a
  classification run); several runs get a ``run`` column;
* ``excess`` (raw-data run directories): per σ / task group and n, the model's and the Bayes
  mixture's squared error and the excess risk (model − Bayes)/Bayes with its CI;
* ``sweep`` / ``sweep-trials`` (sweep directories): per grid point the mean across seeds with the
  95% t-interval, or one row per trial (``selectlens.sweeps.aggregate``, as in ``summary.md``);
* ``asha`` (sweep directories run under ASHA, e.g. kept by ``scripts/keep_sweep.py``): one row per trial that
  trained, furthest rung first, with the metric the scheduler compared at each rung, and a line counting
  every trial (finished, stopped, unfinished, not started);
* ``bench`` (``selectlens bench … --json`` files): one row per file, SelectLens against its reference;
* ``efficiency`` (``bench train --json`` files): GFLOP/s, fraction of a matmul, the profile split;
* ``recipe`` (``scripts/recipe_ablation.py`` output directories): per arm across its seeds, the sequences
  reached, how many seeds left the plateau (eval MSE over all positions within 1.25× the Bayes mixture's), σ = 0.5's worst
  excess ratio at n ≥ 2d, σ = 0.1's at n = d and 2d beside the best single-λ ridge's, and how many
  seeds show selection at σ = 0.1 for every n in d..2d; each arm's change is from ``preset=`` (default
  ``mixed_noise_cpu``) with the overrides ``preset-set=KEY=VALUE,…`` (the preset as it was when the runs
  were made);
* ``vs-oracle`` (raw-data run directories): per task group and n (default 2d, 3d, N − 1) the model
  against one reference (``predictor=``, default ``type_oracle``) in the group's metric (sign error
  for classification, squared error otherwise), each with its CI, and their ratio;
* ``mixture-vs-single`` (raw-data run directories): the three-model σ experiment from each run's own
  eval.json, the mixture model against the model trained on that σ alone at n ≥ 2d, their ratio per
  training seed with a 95% t-interval across seeds;
* ``paired`` (raw-data run directories NAME_s0, NAME_s1, …, one arm per NAME): each arm against the
  arm ``reference=NAME`` seed by seed, the difference of the excess over the Bayes mixture over all positions,
  of σ = 0.1's at n = d and 2d and of σ = 0.5's worst at n ≥ 2d, with 95% t-intervals across seeds,
  both arms' training time, and the per-epoch excess at equal training time (the faster run's);
* ``noise-models`` (the ``--json`` output of ``scripts/noise_models_table.py``): its tables.

Under each table the script writes the command that regenerates it, the command that produced its
sources, and the machine: what the sources record (device, torch threads, CPUs) and ``--machine``,
else the machine this script runs on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import sys
from pathlib import Path
from typing import Any

REGION = re.compile(r"(<!-- table: (?P<name>[\w.-]+)(?P<opts>[^>]*?)-->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


class TableError(Exception):
    """A source or page the script cannot use; printed as one ``error:`` line."""


# ---------------------------------------------------------------------------------------------
# eval.json → rows. The one place that knows eval.json's schema.


def eval_rows(eval_json: dict[str, Any], metric: str = "mse") -> list[dict[str, Any]]:
    """One row per predictor of an ``eval.json``: ``predictor``, ``sees``, ``loss``, ``ci`` (95%),
    ``diff`` and ``diff_ci`` (paired, baseline − model; None for the model), in eval's order.

    Selection runs keep a table per metric under ``tables`` (``mse`` = squared error or Brier
    score, ``bce`` = log-loss); raw-data runs have only ``predictors``, the squared error over all
    x positions. Both give each predictor its mean (``mean`` or ``mse``), ``ci_low``/``ci_high``,
    ``sees`` and, for baselines, ``paired_diff``/``paired_diff_ci``.
    """
    tables = eval_json.get("tables")
    if tables is not None:
        if metric not in tables:
            raise TableError(f"eval.json has no {metric!r} table (has {', '.join(tables)})")
        predictors = tables[metric]["predictors"]
    elif metric == "mse":
        predictors = eval_json["predictors"]
    else:
        raise TableError(f"eval.json of a {eval_json.get('task')} run has only the squared error, not {metric!r}")
    rows = []
    for name, e in predictors.items():
        mean = e["mean"] if "mean" in e else e["mse"]
        diff = e.get("paired_diff")
        rows.append({
            "predictor": name,
            "sees": "" if name == "model" else e.get("sees", ""),
            "loss": float(mean),
            "ci": (float(e["ci_low"]), float(e["ci_high"])),
            "diff": None if diff is None else float(diff),
            "diff_ci": None if diff is None else (float(e["paired_diff_ci"][0]), float(e["paired_diff_ci"][1])),
        })
    rows.sort(key=lambda r: r["predictor"] != "model")  # the model first, the rest in eval's order
    return rows


def metric_label(eval_json: dict[str, Any], metric: str) -> str:
    tables = eval_json.get("tables")
    if tables is not None:
        return tables[metric]["metric_name"]
    return "squared error, all positions"


# ---------------------------------------------------------------------------------------------
# Formatting


def _f(v: float, spec: str = ".5f") -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _ci(lo: float, hi: float, spec: str = ".5f") -> str:
    if any(isinstance(v, float) and math.isnan(v) for v in (lo, hi)):
        return "(n<2)"
    return f"[{_f(lo, spec)}, {_f(hi, spec)}]"


def _verdict(lo: float, hi: float) -> str:
    return "model better" if lo > 0 else ("baseline better" if hi < 0 else "not significant")


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in r] for r in [head, *rows]]
    return ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in esc[1:])]


def source_command(run: Path, eval_flags: str = "") -> str:
    """What made a run's results: a kept record's own command (``scripts/keep_run.py``: train, then eval),
    else the eval of the run directory."""
    record = run / "record.json"
    if record.is_file():
        return _read_json(record)["command"]
    return f"selectlens eval --run {shlex.quote(str(run))}{eval_flags}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TableError(f"{path}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Views: each returns (markdown lines, source command, what the sources record about the machine)


def view_eval(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    metric = opts.get("metric", "mse")
    evals = [(s, _read_json(s / "eval.json")) for s in sources]
    label = metric_label(evals[0][1], metric)
    many = len(evals) > 1
    head = (["run"] if many else []) + ["predictor", "sees", f"{label} [95% CI]", "baseline − model [paired 95% CI]"]
    rows = []
    for src, ev in evals:
        for r in eval_rows(ev, metric):
            name = f"**{r['predictor']}**" if r["predictor"] == "model" else r["predictor"]
            paired = "" if r["diff"] is None else (
                f"{_f(r['diff'], '+.5f')} {_ci(*r['diff_ci'], '+.5f')} {_verdict(*r['diff_ci'])}")
            rows.append(([src.name] if many else []) + [name, r["sees"], f"{_f(r['loss'])} {_ci(*r['ci'])}", paired])
    cmds = "; ".join(source_command(s, f" --sequences {ev['sequences']}") for s, ev in evals)
    return _table(head, rows), cmds, _run_devices(sources)


def view_excess(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    rows = []
    for src in sources:
        ev = _read_json(src / "eval.json")
        sizes = ev.get("positions") or []  # the context size n at each read-out position
        if len(sizes) < 2:
            raise TableError(f"{src}: view excess needs a run read out at several positions (eval.json of a {ev.get('task')} run)")
        wanted = _positions(opts, sizes, None, src)
        ns = [sizes.index(n) for n in wanted] if wanted is not None else ev["table_positions"]  # indices
        ref = ev["reference"]
        for g, res in ev["groups"].items():
            if "excess_risk_ratio" not in res:
                continue
            model, bayes, ratio = res["predictors"]["model"]["mse"], res["predictors"][ref]["mse"], res["excess_risk_ratio"]
            excess, line = res["model_minus_reference"], res.get("non_selecting_excess")
            for n in ns:
                rows.append(([src.name] if len(sources) > 1 else []) + [
                    g, str(sizes[n]), f"{_f(model['mean'][n], '.4f')} {_ci(model['ci_low'][n], model['ci_high'][n], '.4f')}",
                    _f(bayes["mean"][n], ".4f"),
                    f"{_f(excess['mean'][n], '+.4f')} {_ci(excess['ci_low'][n], excess['ci_high'][n], '+.4f')}",
                    "—" if line is None else _f(line["mean"][n], "+.4f"),
                    "—" if line is None else ("yes" if res["selection_shown"][n] else "no"),
                    f"{_f(ratio['mean'][n], '+.3f')} {_ci(ratio['ci_low'][n], ratio['ci_high'][n], '+.3f')}"])
    head = (["run"] if len(sources) > 1 else []) + [
        "group", "n", "model MSE [95% CI]", "reference MSE", "model − reference [paired 95% CI]",
        "best single-λ ridge − reference", "selection shown", "(model − reference)/reference [95% CI]"]
    cmds = "; ".join(source_command(s) for s in sources)
    return _table(head, rows), cmds, _run_devices(sources)


def _sweep_view(sources: list[Path], per_trial: bool) -> tuple[list[str], str, str]:
    from selectlens.sweeps.aggregate import collect, group_rows, group_table, trial_table

    lines: list[str] = []
    for src in sources:
        data = collect(src)
        head, rows = trial_table(data) if per_trial else group_table(data, group_rows(data))
        if len(sources) > 1:
            lines += [f"**{src.name}**", ""]
        lines += _table(head, rows) + ([""] if len(sources) > 1 else [])
    cmds = "; ".join(f"selectlens sweep {shlex.quote(str(s / 'spec.yaml'))} --out {shlex.quote(str(s))}" for s in sources)
    return lines, cmds, _run_devices([t for s in sources for t in sorted((s / "trials").glob("*"))[:1]])


def view_sweep(sources, opts):
    return _sweep_view(sources, per_trial=False)


def view_sweep_trials(sources, opts):
    return _sweep_view(sources, per_trial=True)


def view_asha(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    """ASHA's rungs (``selectlens.sweeps.asha.rung_table``): per trial, the metric it had at each rung it reached."""
    from selectlens.errors import SelectLensError
    from selectlens.sweeps.asha import rung_table

    lines: list[str] = []
    for src in sources:
        try:
            head, rows, count = rung_table(src)
        except (SelectLensError, ValueError) as err:
            raise TableError(f"view asha: {err}") from None
        if len(sources) > 1:
            lines += [f"**{src.name}**", ""]
        lines += [count + ".", ""] + _table(head, rows) + ([""] if len(sources) > 1 else [])
    cmds = "; ".join(_read_json(s / "record.json")["command"] if (s / "record.json").is_file()
                     else f"selectlens sweep {shlex.quote(str(s / 'spec.yaml'))} --out {shlex.quote(str(s))}" for s in sources)
    return lines, cmds, _run_devices([t for s in sources for t in sorted((s / "trials").glob("*"))[:1]])


def bench_kind(result: dict[str, Any]) -> str:
    """Which ``selectlens bench`` wrote this JSON: datagen, train, baselines or sweep."""
    if "ray_s" in result:
        return "sweep"
    if "max_abs_diff" in result:
        return "baselines"
    if "flops_per_sequence" in result:
        return "train"
    if "ours_seq_per_s" in result:
        return "datagen"
    raise TableError("not the JSON of a `selectlens bench` command")


def bench_command(result: dict[str, Any]) -> str:
    """The ``selectlens bench`` command line that produces ``result`` (from the settings it records)."""
    kind = bench_kind(result)
    dev = str(result.get("device", "cpu")).split(" ")[0]
    device = [] if dev == "cpu" else ["--device", dev]
    if kind == "datagen":
        args = ["--task", result["task"], "--sequences", str(result["sequences"]),
                "--reference-sequences", str(result["reference_sequences"])] + device
    elif kind == "train":
        preset = result.get("config", "default")
        args = [] if preset == "default" else ["--config", preset]
        recorded = {"data.train_samp_per_class": result["sequences_per_epoch"], "training.batch_size": result["batch_size"]}
        recorded |= {k: result[f] for k, f in (("data.layout", "layout"), ("model.n_embd", "n_embd"), ("model.n_layer", "n_layer"),
                                               ("training.target", "target"), ("training.position_weights", "position_weights"))
                     if f in result}
        args += _recorded_overrides(preset, recorded)
        args += ["--set", "training.compile=true"] * bool(result["compile"])
        args += ["--set", "training.fused_adam=true"] * bool(result["fused_adam"])
        args += (["--reference-sequences", str(result["reference_sequences"])] if result["reference_sequences"] else []) + device
    elif kind == "baselines":
        args = ["--d", str(result["d"]), "--N", str(result["N"]),
                "--noise-levels", ",".join(f"{s:g}" for s in result["noise_levels"]),
                "--sequences", str(result["sequences"]), "--reference-sequences", str(result["reference_sequences"]),
                "--threads", str(result["torch_threads"])] + device
    else:
        args = ["--trials", str(result["trials"])]
    return shlex.join(["selectlens", "bench", kind, *args, "--json"])


def _recorded_overrides(preset: str, recorded: dict[str, Any]) -> list[str]:
    """``--set`` flags for the recorded settings that differ from ``preset``'s (when it loads)."""
    from selectlens.config import ConfigError, load_config

    try:
        cfg = load_config(preset).to_dict()
    except (ConfigError, OSError):
        return []
    out = []
    for key, value in recorded.items():
        section, field = key.split(".")
        if field in cfg[section] and cfg[section][field] != value:
            out += ["--set", f"{key}={value}"]
    return out


def _bench_machine(r: dict[str, Any]) -> str:
    if "cpus" in r:
        return f"{r['cpus']} CPUs, {r['cpus_per_trial']:g} per trial"
    threads = r.get("torch_threads", "?")
    return f"{r.get('device', 'cpu')}, {threads} torch thread{'' if threads == 1 else 's'}"


def view_bench(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    head = ["benchmark", "device", "SelectLens", "reference", "ratio"]
    rows, cmds = [], []
    for src in sources:
        r = _read_json(src)
        kind = bench_kind(r)
        cmds.append(bench_command(r))
        if kind == "sweep":
            ours, ref = f"Ray Tune {r['ray_s']:.1f} s", f"sequential CLI {r['cli_s']:.1f} s"
        else:
            ours, ref = f"{r['ours_seq_per_s']:,.0f} seq/s", f"{r['reference_seq_per_s']:,.1f} seq/s"
        no_reference = r.get("reference_sequences", 1) == 0
        rows.append([f"`{bench_command(r)}`", _bench_machine(r), ours, "— (none for this task)" if no_reference else ref,
                     "—" if no_reference else f"{r['ratio']:,.2f}×"])
    return _table(head, rows), "the commands in the first column", ""


def view_efficiency(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    head = ["step", "seq/s (full epoch)", "MFLOP per training sequence", "GFLOP/s", "matmul GFLOP/s",
            "fraction of the matmul", "profile"]
    rows, cmds = [], []
    for src in sources:
        r = _read_json(src)
        if bench_kind(r) != "train":
            continue
        cmds.append(bench_command(r))
        step = ("torch.compile" if r["compile"] else "eager") + (", fused Adam" if r["fused_adam"] else ", for-loop Adam")
        if r.get("config", "default") != "default":
            loss = f", {r['target']} target, {r['position_weights']} positions" if "target" in r else ""
            step = f"{r['config']} ({r.get('layout', '')} layout, width {r.get('n_embd', '?')}, batch {r['batch_size']}{loss}): {step}"
        profile = " / ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in r["profile"].items())
        rows.append([step, f"{r['ours_seq_per_s']:,.0f}", f"{r['flops_per_sequence'] / 1e6:.2f}",
                     f"{r['achieved_gflops']:.1f}", f"{r['matmul_gflops']:.1f}", f"{r['matmul_fraction']:.1%}", profile])
    if not rows:
        raise TableError("view efficiency needs `selectlens bench train --json` outputs")
    return _table(head, rows), "; ".join(cmds), "; ".join(dict.fromkeys(_bench_machine(_read_json(s)) for s in sources))


def view_noise_models(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from noise_models_table import markdown

    lines: list[str] = []
    for src in sources:
        result = _read_json(src)
        lines += markdown(result).rstrip("\n").splitlines()
    runs = " ".join(shlex.quote(r) for s in sources for r in _read_json(s)["runs"])
    return lines, f"python scripts/noise_models_table.py {runs} --json OUT.json", ""


def view_task_diversity(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    """The transition table written by scripts/task_diversity_figure.py (its STEM.json)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from task_diversity_figure import table

    lines: list[str] = []
    for src in sources:
        lines += table(_read_json(src)).rstrip("\n").splitlines()
    return lines, " ; ".join(f"python scripts/task_diversity_figure.py SWEEP --out {shlex.quote(str(s.with_suffix('')))}"
                             for s in sources), ""


# The recipe ablation (scripts/recipe_ablation.py): one row per arm, across its seeds.
RECIPE_KEYS = ("data.task", "data.layout", "data.noise_levels", "model.n_embd", "model.n_layer", "training.batch_size",
               "training.lr", "training.warmup_steps", "training.curriculum", "training.target",
               "training.position_weights", "training.bayes_risk_power")
PLATEAU = 1.25  # a model whose eval MSE (mean over positions) is above 1.25 × the reference's has not left the plateau


def _dotted(cfg: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def _positions(opts: dict[str, str], sizes: list[int], default: list[int], src: Path) -> list[int]:
    """The context sizes n a table shows: ``positions=`` (each one a run has) or ``default``."""
    if "positions" not in opts:
        return default
    try:
        wanted = [int(n) for n in opts["positions"].split(",")]
    except ValueError:
        raise TableError(f"positions={opts['positions']}: not a comma-separated list of integers") from None
    if not set(wanted) <= set(sizes):
        raise TableError(f"{src}: positions={opts['positions']}: n must be one of {sizes[0]}..{sizes[-1]}")
    return wanted


def _sigma_groups(ev: dict[str, Any]) -> list[str]:
    return [g for g in ev["groups"] if g.startswith("sigma=")]


def _mean_over_positions(res: dict[str, Any], name: str) -> float:
    curve = res["predictors"][name]["mse"]["mean"]
    return sum(curve) / len(curve)


def recipe_run(run: Path) -> dict[str, Any]:
    """One ablation run: its config and eval.json, sequences trained and asked, plateau (from eval.json, at full size on
    its 20,000 held-out sequences), and per σ group the excess ratio and the best single-λ ridge's at each n."""
    cfg, ev = _run_config(run), _read_json(run / "eval.json")
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if (run / "metrics.jsonl").is_file() else []
    if not lines:
        raise TableError(f"{run}: no metrics.jsonl records (a run that never finished an epoch)")
    n_train = round(cfg["data"]["train_samp_per_class"] * cfg["data"]["train_prop"])
    d, sizes, ref = ev["d"], ev["positions"], ev["reference"]
    if "excess_risk_ratio" not in ev["groups"]["all"] or not any(n >= 2 * d for n in sizes):
        raise TableError(f"{run}: view recipe needs a raw-data run read out at n = d..N−1 (eval.json of a {ev.get('task')} run)")
    all_ = ev["groups"]["all"]
    out = {"config": cfg, "eval": ev, "sequences": json.loads(lines[-1])["sequences"], "asked": cfg["training"]["epochs"] * n_train,
           "plateau": _mean_over_positions(all_, "model") > PLATEAU * _mean_over_positions(all_, ref), "groups": {}}
    selects = len(cfg["data"].get("noise_levels") or []) > 1  # one σ: the best single ridge is the Bayes rule
    idx = {n: i for i, n in enumerate(sizes)}
    for g in _sigma_groups(ev):
        res = ev["groups"][g]
        ratio, shown = res["excess_risk_ratio"], res["selection_shown"]
        worst = max((n for n in sizes if n >= 2 * d), key=lambda n: ratio["mean"][idx[n]])
        out["groups"][g] = {"ratio": {n: ratio["mean"][i] for n, i in idx.items()},
                            "ci": {n: (ratio["ci_low"][i], ratio["ci_high"][i]) for n, i in idx.items()},
                            "shown_d_2d": all(shown[idx[n]] for n in range(d, 2 * d + 1) if n in idx) if selects else None,
                            "worst_n": worst, "d": d}
        ref_mse, line = res["predictors"][ref]["mse"]["mean"], res.get("non_selecting_excess")
        if line is not None and selects:
            out["groups"][g]["line"] = {n: line["mean"][i] / ref_mse[i] for n, i in idx.items()}
    return out


def _run_config(run: Path) -> dict[str, Any]:
    """The run's config with every key (one written before a key existed gets its default, as a resume would)."""
    from selectlens.errors import SelectLensError
    from selectlens.rundir import read_run_config

    try:
        return read_run_config(run).model_dump(mode="json")
    except SelectLensError as err:
        raise TableError(str(err)) from None


def _change(cfg: dict[str, Any], preset: dict[str, Any]) -> str:
    diff = [f"{k.split('.')[-1]}={_dotted(cfg, k)}" for k in RECIPE_KEYS if _dotted(cfg, k) != _dotted(preset, k)]
    return ", ".join(diff) or "— (the preset)"


def _sigma_cells(runs: list[dict[str, Any]], g: str) -> list[str]:
    """σ = 0.5's worst excess at n ≥ 2d, or σ = 0.1's excess at d and 2d, the ridge line and the selection count.
    Several seeds: their mean and 95% t-interval across seeds. One seed: its value and its own paired 95% CI
    over the held-out sequences (a CI across seeds needs two)."""
    from selectlens.sweeps.aggregate import t_interval

    gs = [r["groups"][g] for r in runs if g in r["groups"]]

    def interval(ns: list[int]) -> tuple[float, float, float]:  # each run's excess at its own n
        if len(gs) == 1:
            return (gs[0]["ratio"][ns[0]], *gs[0]["ci"][ns[0]])
        return t_interval([x["ratio"][n] for x, n in zip(gs, ns)])

    if g == "sigma=0.5":
        if not gs:
            return ["—"]
        m, lo, hi = interval([x["worst_n"] for x in gs])
        return [f"{m:+.3f} {_ci(lo, hi, '+.3f')}"]
    if not gs:
        return ["—"] * 3
    d = gs[0]["d"]
    at = [interval([n] * len(gs)) for n in (d, 2 * d)]
    lines = [sum(x["line"][n] for x in gs) / len(gs) for n in (d, 2 * d)] if all("line" in x for x in gs) else None
    shown = [x["shown_d_2d"] for x in gs]
    return [" / ".join(f"{m:+.2f} {_ci(lo, hi, '+.2f')}" for m, lo, hi in at),
            "—" if lines is None else " / ".join(f"{v:+.2f}" for v in lines),
            "—" if None in shown else f"{sum(shown)}/{len(shown)}"]


def view_recipe(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    """Per arm of each ablation directory: sequences, seeds off the plateau, σ = 0.5 worst excess at n ≥ 2d,
    σ = 0.1 excess at n = d and 2d against the best single-λ ridge, seeds showing selection for all n in d..2d.
    Plain run directories (``selectlens train`` + ``eval``, no ablation.json) are one row per configuration
    (their change from the preset), the seeds of that configuration together."""
    from selectlens.config import ConfigError, load_config

    name, sets = opts.get("preset", "mixed_noise_cpu"), [s for s in opts.get("preset-set", "").split(",") if s]
    try:  # preset-set=KEY=VALUE,…: the preset as it was when the table's runs were made
        preset = load_config(name, sets).model_dump(mode="json")
    except ConfigError as err:
        raise TableError(f"preset={name} preset-set={','.join(sets)}: {err}") from None
    books: dict[str, dict[tuple[str, str | None], list[dict[str, Any]]]] = {}  # source → (arm, change) → seeds
    cmds, devices = [], []
    for src in sources:
        if (src / "ablation.json").is_file() or not (src / "eval.json").is_file():
            book = _read_json(src / "ablation.json")
            devices.append(book.get("device", "?"))
            cmds.append(book.get("command", f"python scripts/recipe_ablation.py --out {src}"))
            arms = books.setdefault(str(src), {})
            for r in book["runs"]:
                run = src / f"{r['arm']}_s{r['seed']}"
                if r["rc"] == 0 and (run / "eval.json").is_file():
                    arms.setdefault((r["arm"], None), []).append(recipe_run(run))
        else:  # one run of its own
            one = recipe_run(src)
            devices.append(one["config"].get("device", "?"))
            cmds.append(source_command(src))
            arm = re.sub(r"_s\d+$", "", src.name)  # runs/NAME_s0, runs/NAME_s1, … are the seeds of one row
            row = books.setdefault("", {}).setdefault((arm, _change(one["config"], preset)), [])
            if any(r["config"]["seed"] == one["config"]["seed"] for r in row):
                raise TableError(f"{src}: a second run of {arm} with seed {one['config']['seed']}; give each seed once")
            row.append(one)
    many = len(books) > 1  # several ablation directories (or one and some plain runs): say which row is whose
    head = (["source"] if many else []) + [
        "arm", "change from the preset", "sequences (asked)", "off the plateau", "σ=0.5: worst excess n ≥ 2d",
        "σ=0.1: excess at n = d / 2d", "best single-λ ridge at d / 2d", "σ=0.1 selection shown for all n in d..2d"]
    names = [Path(k).name for k in books if k]
    rows = []
    for key, arms in books.items():
        name = "runs" if not key else (Path(key).name if names.count(Path(key).name) == 1 else key)
        for (arm, _), runs in arms.items():
            rows.append(([name] if many else []) + _recipe_row(arm, runs, preset))
    return _table(head, rows), "; ".join(cmds), "device " + ", ".join(dict.fromkeys(devices))


def _recipe_row(arm: str, runs: list[dict[str, Any]], preset: dict[str, Any]) -> list[str]:
    seq, asked = sum(r["sequences"] for r in runs) / len(runs), max(r["asked"] for r in runs)
    capped = sum(r["sequences"] < r["asked"] for r in runs)
    seqs = f"{seq / 1e6:.2f}M" + (f" ({asked / 1e6:.2f}M; {capped} of {len(runs)} capped, schedule unfinished)"
                                  if capped else "")
    return [arm, _change(runs[0]["config"], preset), seqs, f"{sum(not r['plateau'] for r in runs)}/{len(runs)}",
            *_sigma_cells(runs, "sigma=0.5"), *_sigma_cells(runs, "sigma=0.1")]


def view_vs_oracle(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    """Per task group and n (default 2d, 3d and N − 1): the model against one reference predictor
    (``predictor=``, default ``type_oracle``) in the group's own metric (sign error for classification,
    squared error otherwise)."""
    other = opts.get("predictor", "type_oracle")
    head = (["run"] if len(sources) > 1 else []) + ["group", "metric", "n", "model [95% CI]", f"{other} [95% CI]",
                                                    f"model / {other} − 1 [paired 95% CI]"]
    rows = []
    for src in sources:
        ev = _read_json(src / "eval.json")
        sizes, d = ev["positions"], ev["d"]
        if other not in ev["groups"]["all"]["predictors"]:
            raise TableError(f"{src}: predictor={other} is not in its eval.json "
                             f"(one of {', '.join(ev['groups']['all']['predictors'])})")
        wanted = _positions(opts, sizes, sorted({n for n in (2 * d, 3 * d, sizes[-1]) if n in sizes}), src)
        for g, res in ev["groups"].items():
            if g == "all":
                continue
            metric = "sign_error" if "sign_error" in res["predictors"]["model"] else "mse"
            model, ref = res["predictors"]["model"][metric], res["predictors"][other][metric]
            ratio = res["predictors"][other].get("model_excess_over", {}).get(metric)  # absent in older eval.json
            for n in wanted:
                i = sizes.index(n)
                rows.append(([src.name] if len(sources) > 1 else []) + [
                    g, metric, str(n), f"{_f(model['mean'][i], '.4f')} {_ci(model['ci_low'][i], model['ci_high'][i], '.4f')}",
                    f"{_f(ref['mean'][i], '.4f')} {_ci(ref['ci_low'][i], ref['ci_high'][i], '.4f')}",
                    _ratio_cell(model["mean"][i], ref["mean"][i], ratio, i)])
    cmds = "; ".join(source_command(s) for s in sources)
    return _table(head, rows), cmds, _run_devices(sources)


def _ratio_cell(model: float, ref: float, ratio: dict[str, list[float]] | None, i: int) -> str:
    """model/ref − 1 with its paired CI from eval.json (older files have none: say so); "—" where ref is 0."""
    if not ref:
        return "— (reference error 0)"
    if ratio is None:
        return _f(model / ref - 1, "+.3f") + " (no CI: re-run eval)"
    return f"{_f(ratio['mean'][i], '+.3f')} {_ci(ratio['ci_low'][i], ratio['ci_high'][i], '+.3f')}"


def _ratio_ci(mix: dict[str, Any], one: dict[str, Any], i: int) -> tuple[float, float, float]:
    """a / b − 1 of two models' MSEs on independent held-out sets, with the delta method's 95% CI from each
    mean's own (normal) CI: var(a/b) ≈ (a/b)² ((se_a/a)² + (se_b/b)²)."""
    z = 1.959963984540054
    (a, a_lo, a_hi), (b, b_lo, b_hi) = ([g["predictors"]["model"]["mse"][k][i] for k in ("mean", "ci_low", "ci_high")]
                                        for g in (mix, one))
    r = a / b
    half = z * r * math.hypot((a_hi - a_lo) / (2 * z * a), (b_hi - b_lo) / (2 * z * b))
    return r - 1, r - 1 - half, r - 1 + half


def view_mixture_vs_single(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    """The three-model σ experiment from each model's own eval.json: the mixture runs (trained on several σ)
    against the runs trained on one σ, on that σ, at n ≥ 2d (or ``positions=``). Runs pair by their training
    seed: the ratio mixture_s / single_s − 1 of their squared errors per seed s, then the mean across seeds
    with a 95% t-interval."""
    from selectlens.sweeps.aggregate import t_interval

    mixture: dict[int, dict[str, Any]] = {}
    single: dict[str, dict[int, dict[str, Any]]] = {}
    for src in sources:
        ev, seed = _read_json(src / "eval.json"), _read_json(src / "config.json")["seed"]
        groups = _sigma_groups(ev)
        if not groups:
            raise TableError(f"{src}: view mixture-vs-single needs raw-data runs with σ groups")
        book = mixture if len(groups) > 1 else single.setdefault(groups[0], {})
        if seed in book:
            raise TableError(f"{src}: a second run of seed {seed} of the same kind; give one run per seed")
        book[seed] = ev | {"_src": src}
    if not mixture or not single:
        raise TableError("view mixture-vs-single needs runs trained on the σ mixture and runs trained on one σ")
    ev0 = next(iter(mixture.values()))
    sizes, d = ev0["positions"], ev0["d"]
    for ev in [*mixture.values(), *(e for b in single.values() for e in b.values())]:
        if ev["positions"] != sizes:
            raise TableError(f"{ev['_src']}: its context sizes differ from {ev0['_src']}'s; compare runs of one task size")
    wanted = _positions(opts, sizes, [n for n in sizes if n >= 2 * d], ev0["_src"])
    paired = {g: sorted(set(mixture) & set(singles)) for g, singles in single.items()}
    for g, seeds in paired.items():
        if not seeds:
            raise TableError(f"no seed has both a mixture run and a {g} run (mixture seeds {sorted(mixture)}, "
                             f"{g} seeds {sorted(single[g])})")
    one_seed = any(len(seeds) == 1 for seeds in paired.values())
    head = ["σ", "n", "mixture model MSE", "single-σ model MSE", "Bayes (own σ known: oracle ridge)",
            "mixture / single − 1 [95% t-interval over seeds" + ("; one seed: delta-method CI over sequences]"
                                                                  if one_seed else "]"), "seeds"]
    rows = []
    for g, singles in single.items():
        seeds = paired[g]
        for n in wanted:
            i = sizes.index(n)
            mse = lambda ev, name="model": ev["groups"][g]["predictors"][name]["mse"]["mean"][i]  # noqa: E731
            mix, one = [mse(mixture[s]) for s in seeds], [mse(singles[s]) for s in seeds]
            oracle = [mse(mixture[s], "oracle_sigma_ridge") for s in seeds]
            if len(seeds) > 1:
                m, lo, hi = t_interval([a / b - 1 for a, b in zip(mix, one)])
            else:
                m, lo, hi = _ratio_ci(mixture[seeds[0]]["groups"][g], singles[seeds[0]]["groups"][g], i)
            k = len(seeds)
            rows.append([g[6:], str(n), _f(sum(mix) / k, ".4f"), _f(sum(one) / k, ".4f"), _f(sum(oracle) / k, ".4f"),
                         f"{m:+.3f} {_ci(lo, hi, '+.3f')}", ",".join(map(str, seeds))])
    cmds = "; ".join(source_command(s) for s in sources)
    return _table(head, rows), cmds, _run_devices(sources)


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """A JSON-lines file's records; a line that is not a JSON object is a TableError naming it."""
    out = []
    for k, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            raise TableError(f"{path}: line {k} is not a JSON record")
        out.append(rec)
    return out


def _epoch_curve(run: Path, reference: str) -> list[tuple[float, float]]:
    """(training seconds, excess ratio over ``reference`` on the full task) at each epoch of a run: the per-epoch
    test split of metrics.jsonl (a curriculum run's full-size split), timed by timing.jsonl's ``elapsed_s``
    (training plus the per-epoch scoring). Epochs whose values are at a curriculum point are left out."""
    from selectlens.sweeps.asha import epoch_report

    timing = run / "timing.jsonl"
    if not timing.is_file():
        raise TableError(f"{timing}: missing; view paired compares training times")
    times = {}
    for rec in _jsonl(timing):
        if not isinstance(rec.get("elapsed_s"), (int, float)) or "epoch" not in rec:
            raise TableError(f"{timing}: a record without epoch and elapsed_s")
        times[rec["epoch"]] = float(rec["elapsed_s"])
    if list(times.values()) != sorted(times.values()):
        raise TableError(f"{timing}: elapsed_s decreases (a resumed run's clock restarted); its times do not compare")
    out = []
    for rec in _jsonl(run / "metrics.jsonl"):
        rep = epoch_report(rec, reference, 0.0)
        if rec.get("epoch") in times and "excess_ratio" in rep and not rep.get("at_point"):
            out.append((times[rec["epoch"]], rep["excess_ratio"]))
    return out


def _at_equal_time(arm: list[tuple[float, float]], ref: list[tuple[float, float]]) -> float | None:
    """arm − reference, each at its last epoch finished by the time the faster of the two had finished training
    (None where one had finished no epoch by then)."""
    if not arm or not ref:
        return None
    by = min(arm[-1][0], ref[-1][0])
    a, r = [v for s, v in arm if s <= by], [v for s, v in ref if s <= by]
    return a[-1] - r[-1] if a and r else None


def _paired_values(run: Path) -> dict[str, Any]:
    """What view paired compares for one run: the excess over the Bayes mixture over all positions, σ = 0.1's at
    n = d and 2d, σ = 0.5's worst at n ≥ 2d (as in view recipe), and the per-epoch curve in training seconds."""
    r = recipe_run(run)
    ev = r["eval"]
    all_, ref, d = ev["groups"]["all"], ev["reference"], ev["d"]
    curve = _epoch_curve(run, ref)
    out = {"seed": r["config"]["seed"], "d": d, "curve": curve, "seconds": curve[-1][0] if curve else None,
           "all": _mean_over_positions(all_, "model") / _mean_over_positions(all_, ref) - 1}
    low, high = r["groups"].get("sigma=0.1"), r["groups"].get("sigma=0.5")
    if low is not None and {d, 2 * d} <= set(low["ratio"]):
        out["sigma0.1_at_d"], out["sigma0.1_at_2d"] = low["ratio"][d], low["ratio"][2 * d]
    if high is not None:
        out["sigma0.5_worst"] = high["ratio"][high["worst_n"]]
    return out


def _interval_cell(values: list[float], spec: str) -> str:
    from selectlens.sweeps.aggregate import t_interval

    m, lo, hi = t_interval(values)
    return f"{m:{spec}} {_ci(lo, hi, spec)}"


def _per_seed(values: list[float]) -> str:
    return ", ".join(f"{v:+.3f}" for v in values)


def _paired_cells(arm: list[dict[str, Any]], ref: list[dict[str, Any]]) -> list[str]:
    """view paired's cells for one arm, its runs and the reference's in seed order (see view_paired)."""
    pairs = list(zip(arm, ref))

    def diff(key: str, spec: str) -> str:
        if any(key not in a or key not in r for a, r in pairs):
            return "—"
        return _interval_cell([a[key] - r[key] for a, r in pairs], spec)

    timed = all(run["seconds"] is not None for run in arm + ref)
    mean_seconds = [sum(run["seconds"] for run in runs) / len(runs) for runs in (arm, ref)] if timed else []
    time_cell = " / ".join(f"{s:,.0f}" for s in mean_seconds) or "—"
    same = [_at_equal_time(a["curve"], r["curve"]) for a, r in pairs]
    same_cell = "—" if None in same else f"{_interval_cell(same, '+.3f')} ({_per_seed(same)})"
    return [diff("all", "+.3f"), _per_seed([a["all"] - r["all"] for a, r in pairs]), diff("sigma0.1_at_d", "+.2f"),
            diff("sigma0.1_at_2d", "+.2f"), diff("sigma0.5_worst", "+.3f"), time_cell, same_cell]


def view_paired(sources: list[Path], opts: dict[str, str]) -> tuple[list[str], str, str]:
    """Each arm against a reference arm (``reference=NAME``), seed by seed: runs NAME_s0, NAME_s1, … are one arm's
    seeds and pair with the reference run of the same training seed. Per arm the paired difference (arm −
    reference) of the excess over the Bayes mixture over all positions, of σ = 0.1's at n = d and 2d and of σ =
    0.5's worst at n ≥ 2d, each the mean across seeds with its 95% t-interval; the per-seed differences of the
    first; the mean training time of both (timing.jsonl), so an arm cheaper per sequence shows it; and the
    difference at equal time: each run's per-epoch excess (metrics.jsonl's test split, a curriculum run's
    full-size one) at its last epoch finished by the time the faster of the pair had finished. That last one
    is not paired by sequence (each run scores its own per-epoch split) and the slower run is partway through
    its schedule."""
    reference = opts.get("reference")
    arms: dict[str, dict[int, dict[str, Any]]] = {}
    for src in sources:
        one = _paired_values(src)
        arm = arms.setdefault(re.sub(r"_s\d+$", "", src.name), {})
        if one["seed"] in arm:
            raise TableError(f"{src}: a second run of seed {one['seed']} of {src.name}; give each seed once")
        arm[one["seed"]] = one
    if len({one["d"] for runs in arms.values() for one in runs.values()}) > 1:
        raise TableError("view paired compares runs of one task size; these runs have different d")
    if reference not in arms:
        raise TableError(f"view paired needs reference=ARM, one of {', '.join(arms)} (got {reference!r})")
    base = arms[reference]
    head = ["arm", "seeds", "excess over all n: arm − reference", "per seed", "σ=0.1 at n = d: arm − reference",
            "σ=0.1 at n = 2d: arm − reference", "σ=0.5 worst n ≥ 2d: arm − reference", "training s: arm / reference",
            "at equal training time, per-epoch split: arm − reference (per seed)"]
    rows = []
    for name, runs in arms.items():
        seeds = sorted(set(runs) & set(base))
        if name == reference:
            continue
        if len(seeds) < 2:
            raise TableError(f"arm {name} shares {len(seeds)} seed(s) with {reference}; a paired interval needs two")
        rows.append([name, ",".join(map(str, seeds)), *_paired_cells([runs[s] for s in seeds], [base[s] for s in seeds])])
    if not rows:
        raise TableError(f"view paired needs runs of an arm other than the reference {reference}")
    return _table(head, rows), "; ".join(source_command(s) for s in sources), _run_devices(sources)


VIEWS = {"asha": view_asha, "task-diversity": view_task_diversity, "eval": view_eval, "excess": view_excess, "sweep": view_sweep, "sweep-trials": view_sweep_trials,
         "bench": view_bench, "efficiency": view_efficiency, "noise-models": view_noise_models, "recipe": view_recipe, "vs-oracle": view_vs_oracle, "mixture-vs-single": view_mixture_vs_single,
         "paired": view_paired}


def default_view(sources: list[Path]) -> str:
    first = sources[0]
    if (first / "sweep.json").is_file():
        return "sweep"
    if (first / "eval.json").is_file():
        return "eval"
    if (first / "ablation.json").is_file():
        return "recipe"
    if first.is_file() and first.suffix == ".json":
        return "noise-models" if "table" in _read_json(first) and "runs" in _read_json(first) else "bench"
    raise TableError(f"{first}: not a run directory with eval.json, a sweep directory or a JSON file")


def _run_devices(runs: list[Path]) -> str:
    devices = []
    for run in runs:
        try:
            devices.append(json.loads((run / "config.json").read_text(encoding="utf-8"))["device"])
        except (OSError, ValueError, KeyError):
            continue
    return "device " + ", ".join(dict.fromkeys(devices)) if devices else ""


def this_machine() -> str:
    """The machine this script runs on, in a few words (deterministic, no dates)."""
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.system()} {cpu}, {os.cpu_count()} CPUs{gpu}, torch {torch.__version__.split('+')[0]}"


# ---------------------------------------------------------------------------------------------
# The page


def _opts(text: str) -> dict[str, str]:
    out = {}
    for part in text.split():
        key, sep, value = part.partition("=")
        if not sep:
            raise TableError(f"marker option {part!r} is not key=value")
        out[key] = value
    return out


def render_region(page: Path, name: str, sources: list[Path], opts: dict[str, str], machine: str | None) -> str:
    """The generated body of region ``name``: the table, then one line with the commands and the machine."""
    for s in sources:
        if not s.exists():
            raise TableError(f"--table {name}: {s} does not exist")
    view = opts.get("view") or default_view(sources)
    if view not in VIEWS:
        raise TableError(f"table {name}: unknown view {view!r} (one of {', '.join(VIEWS)})")
    lines, source_cmd, recorded = VIEWS[view](sources, opts)
    regen = shlex.join(["python", "scripts/results_tables.py", str(page), "--table", name, *map(str, sources)]
                       + (["--machine", machine] if machine else []))
    where = machine or f"{this_machine()} (where the table was generated)"
    machine_text = f"{recorded}; {where}" if recorded else where
    made_by = source_cmd if source_cmd.startswith("the ") else f"`{source_cmd}`"
    footer = (f"<small>Regenerate: `{regen}`. Sources from: {made_by}. "
              f"Machine: {machine_text}.</small>")
    return "\n".join([*lines, "", footer, ""])


def fill_page(text: str, page: Path, tables: dict[str, list[Path]], machine: str | None) -> str:
    """``text`` with each region named in ``tables`` regenerated; unknown names are an error."""
    found = {m.group("name") for m in REGION.finditer(text)}
    missing = [n for n in tables if n not in found]
    if missing:
        raise TableError(f"{page} has no region <!-- table: {missing[0]} --> (has: {', '.join(sorted(found)) or 'none'})")

    def replace(m: re.Match) -> str:
        name = m.group("name")
        if name not in tables:
            return m.group(0)
        body = render_region(page, name, tables[name], _opts(m.group("opts")), machine)
        return m.group(1) + body + m.group(5)

    return REGION.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("page", type=Path, help="the Markdown page with <!-- table: NAME --> … <!-- /table --> regions")
    p.add_argument("--table", nargs="+", action="append", metavar=("NAME", "SOURCE"), required=True,
                   help="a region's name and its sources: run directories, sweep directories or JSON files")
    p.add_argument("--machine", default=None, help="the machine the sources were made on, in words "
                   "(default: this machine's platform, CPU count and GPU)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a region is out of date")
    a = p.parse_args(argv)
    tables: dict[str, list[Path]] = {}
    for name, *sources in a.table:
        if not sources:
            p.error(f"--table {name} needs at least one source")
        tables[name] = [Path(s) for s in sources]
    try:
        old = a.page.read_text(encoding="utf-8")
        new = fill_page(old, a.page, tables, a.machine)
    except (TableError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.check:
        if new != old:
            print(f"{a.page}: out of date in {', '.join(tables)}", file=sys.stderr)
            return 1
        return 0
    if new != old:
        tmp = a.page.with_name(f".{a.page.name}.tmp")
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, a.page)
    print(f"{a.page}: regenerated {', '.join(tables)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
