"""The ``selectlens`` command line: parses flags, calls the library, prints.

Every user-facing problem (bad config, flag, file, path) is printed as one
``error: ...`` line on stderr with a non-zero exit code (2 for bad input),
never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from selectlens.threads import apply_thread_policy

apply_thread_policy()  # before anything imports torch: its OpenMP runtime reads the wait policy once

from selectlens.config import Config, ConfigError, check_device, config_differences, load_config, presets, presets_help
from selectlens.errors import SelectLensError
from selectlens.rundir import check_new_run_dir, run_dir_lock

CONFIG_HELP = presets_help()
SET_HELP = "Override a config value, e.g. --set training.lr=1e-3 (repeatable)."


def _config(config: str | None, overrides: tuple[str, ...], **direct: object) -> Config:
    """Load the config, apply ``--set`` overrides, then direct flags such as ``--seed``."""
    extra = [f"{k}={json.dumps(v)}" for k, v in direct.items() if v is not None]
    return load_config(config, list(overrides) + extra)


def _emit_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


#: The order a new user meets the commands in (``selectlens --help`` lists them so).
COMMAND_ORDER = ["run", "tasks", "data", "train", "eval", "interpret", "predict", "sweep", "sweep-report", "import",
                 "export-tl", "bench"]

#: One example per command, shown at the end of its ``--help``.
EXAMPLES = {
    "run": "selectlens run --config default --out runs/a",
    "tasks": "selectlens tasks",
    "data": "selectlens data --config mixed_noise_cpu --sequences 1000 --out d.safetensors",
    "train": "selectlens train --config default --out runs/a --max-minutes 10",
    "eval": "selectlens eval --run runs/a --json",
    "interpret": "selectlens interpret --run runs/a --sequences 512",
    "predict": "selectlens predict --run runs/a --data d.safetensors --out pred.safetensors",
    "sweep": "selectlens sweep configs/sweeps/seeds.yaml --out sweeps/s --max-concurrent 2",
    "sweep-report": "selectlens sweep-report sweeps/s",
    "import": "selectlens import --checkpoint model.pth --config model_selection --out runs/old",
    "export-tl": "selectlens export-tl --run runs/a --out runs/a-tl",
    "bench": "selectlens bench datagen --task regression --json",
}


class _OrderedGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        known = [c for c in COMMAND_ORDER if c in self.commands]
        return known + sorted(c for c in self.commands if c not in known)


@click.group(cls=_OrderedGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="selectlens")
def cli() -> None:
    """SelectLens: in-context model-selection tasks, transformers, baselines, interpretability."""


@cli.command()
def tasks() -> None:
    """List the task families (values of data.task) with their own data keys."""
    from selectlens.config import FAMILIES, DataConfig

    common = set(DataConfig.model_fields)
    for name in sorted(FAMILIES):
        family = FAMILIES[name]
        own = [k for k in family.Data.model_fields if k not in common]
        doc = (family.__doc__ or "").strip().splitlines()[0] if family.__doc__ else ""
        click.echo(f"{name}: {doc}")
        click.echo(f"    keys: {', '.join(own) or '(only the common ones)'}")
    click.echo(f"common data keys: {', '.join(sorted(common))}; your own family: data.task: package.module:Class")


@cli.command()
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--sequences", type=click.IntRange(min=1), default=None,
              help="Number of sequences (default: data.train_samp_per_class; with --heldout: eval.sequences).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (default: the config's).")
@click.option("--device", default=None, help="torch device (default: the config's; with --heldout: the run's).")
@click.option("--heldout", is_flag=True, help="Export the held-out set that `eval` uses for --run (same sequences, same order).")
@click.option("--run", "run", default=None, type=click.Path(path_type=Path), help="Run directory (with --heldout).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=True, path_type=Path),
              help="Output .safetensors file.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def data(config, overrides, sequences, seed, device, heldout, run, out, force) -> None:
    """Generate sequences and write them, with their ground truth, to a safetensors file."""
    from selectlens.tasks.io import check_writable, write_data_file

    if heldout:
        _export_heldout(run, sequences, device, out, force, given=bool(config or overrides or seed is not None))
        return
    if run is not None:
        raise click.UsageError("--run goes with --heldout")
    cfg = _config(config, overrides, seed=seed, device=device)
    check_writable(out, force=force)  # fail before spending time on generation
    dev = str(check_device(cfg.device))
    n = sequences or cfg.data.train_samp_per_class
    path = write_data_file(out, cfg, n, device=dev, force=force)
    click.echo(f"wrote {n} {cfg.data.task} sequences (tokens {[n, cfg.data.n_positions, cfg.data.n_features]}) to {path}")


def _export_heldout(run: Path | None, sequences: int | None, device: str | None, out: Path, force: bool, given: bool) -> None:
    """``data --heldout --run R``: the exact held-out set of ``eval`` (its seed stream, count and device)."""
    from selectlens.evaluate import heldout_batch
    from selectlens.rundir import read_run_config
    from selectlens.tasks.io import check_finite_batch, check_writable, save_task_batch
    from selectlens.tasks.memory import check_memory, generation_bytes

    if run is None:
        raise click.UsageError("--heldout needs --run RUN, the run whose eval held-out set to export")
    if given:
        raise click.UsageError("--heldout takes the run's own config; drop --config/--set/--seed")
    with run_dir_lock(run) if out.resolve().is_relative_to(run.resolve()) else contextlib.nullcontext():
        check_writable(out, force=force)
        cfg = read_run_config(run)
        dev = _run_device(run, device)
        n = sequences or cfg.eval.sequences
        check_memory(generation_bytes(cfg, n), f"the held-out set of {n:,} sequences", dev, "lower --sequences")
        batch = heldout_batch(cfg, n, dev)
        check_finite_batch(batch, cfg)
        path = save_task_batch(out, batch.to("cpu"), cfg, force=force)
    click.echo(f"wrote the {n} held-out sequences of {run} (tokens {list(batch.tokens.shape)}) to {path}")


def _default_run_dir(cfg: Config, out: Path | None) -> Path:
    return out if out is not None else Path(cfg.out_dir)


@cli.command()
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (default: the config's out_dir).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Stop (with a checkpoint) after this many minutes.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (default: the config's).")
@click.option("--device", default=None, help="torch device (default: the config's).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--nproc", type=click.IntRange(min=1), default=1,
              help="Data-parallel processes (launches torchrun: gloo on CPU, NCCL on GPUs, one GPU per process).")
def train(config, overrides, out, resume, force, max_minutes, seed, device, quiet, nproc) -> None:
    """Train a model; writes checkpoints and metrics.jsonl into the run directory."""
    from selectlens.train import distributed, train as run_training

    if resume and force:
        raise click.UsageError("--resume and --force exclude each other")
    if resume and out is None:
        raise click.UsageError("--resume needs --out RUN, the run directory to continue")
    cfg = _config(config, overrides, seed=seed, device=device)
    run = _default_run_dir(cfg, out)
    if resume and (config or overrides or seed is not None or device is not None):
        _check_resume_config(run, cfg)
    ctx = distributed.env_context()
    with run_dir_lock(run) if ctx.is_main else contextlib.nullcontext():  # torchrun's ranks: the launcher's lock
        if not resume and ctx.is_main:
            check_new_run_dir(run, force=force)
        if nproc > 1 and not ctx.enabled:  # the launcher: checks done, now the same command on nproc ranks
            from selectlens.rundir import read_run_config

            distributed.check_launch(read_run_config(run) if resume else cfg, nproc)
            distributed.launch(nproc, _train_args(config, overrides, run, resume, force, max_minutes, seed, device, quiet))
            return
        result = run_training(cfg, run, resume=resume, force=force, max_minutes=max_minutes, progress=not quiet)
    if ctx.is_main:
        _report_training(result)


def _train_args(config, overrides, run, resume, force, max_minutes, seed, device, quiet) -> list[str]:
    """``selectlens train`` flags that repeat this invocation (for each torchrun rank)."""
    args = ["--out", str(run)] + (["--config", config] if config else [])
    args += [a for o in overrides for a in ("--set", o)]
    args += ["--resume"] * resume + ["--force"] * force + ["--quiet"] * quiet
    args += ["--max-minutes", repr(max_minutes)] if max_minutes is not None else []
    args += ["--seed", str(seed)] if seed is not None else []
    args += ["--device", device] if device else []
    return args


def _check_resume_config(run: Path, cfg: Config) -> None:
    """``--resume`` with ``--config``/``--set``/``--seed``/``--device``: accepted when they resolve to
    the run's own config (``out_dir`` aside), else one line naming the keys that differ."""
    from selectlens.rundir import read_run_config

    differ = config_differences(read_run_config(run), cfg)
    if differ:
        shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
        raise click.UsageError(f"--resume continues {run} with its own config.json; the given config differs in {shown}")


def _report_training(result) -> None:
    for path in getattr(result, "set_aside", []):
        click.echo(f"notice: {path.name} was made from earlier weights; moved to {path}", err=True)
    last = result.last
    state = "stopped at the time limit" if result.stopped_early else "finished"
    if last:
        ref = getattr(result, "reference", None)
        beside = f" ({ref} {last['baselines'][ref]:.5f})" if ref in last["baselines"] else ""
        full = last.get("full_size")  # a curriculum run: the test loss above is at its current point
        if full:
            beside += (f"; on the full-size split {full['test_loss']:.5f}"
                       + (f" ({ref} {full['baselines'][ref]:.5f})" if ref in full["baselines"] else ""))
        click.echo(f"{state}: epoch {result.epoch}, {last['sequences']:,} sequences, test loss {last['test_loss']:.5f}"
                   f"{beside}; run in {result.run_dir}")
    else:
        click.echo(f"{state}: nothing left to train in {result.run_dir}")


@cli.command("eval")
@click.option("--run", "run", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--sequences", type=click.IntRange(min=2), default=None, help="Held-out sequences (default: eval.sequences, 20000).")
@click.option("--device", default=None, help="torch device (default: the run's).")
@click.option("--json", "as_json", is_flag=True, help="Print eval.json.")
def evaluate(run, sequences, device, as_json) -> None:
    """Evaluate a run's model and every baseline on a fixed held-out set (writes eval.json, eval.md, a PNG)."""
    with run_dir_lock(run, existing=True):
        result, paths = _run_eval(run, sequences, device)
    if as_json:
        _emit_json(result)
    else:
        from selectlens.evaluate import eval_markdown

        click.echo(eval_markdown(result))
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")


def _run_device(run: Path, device: str | None) -> str:
    """``--device`` if given (it must exist), else the run's device, falling back to CPU with a
    one-line notice when this machine lacks it."""
    if device:
        return str(check_device(device))
    from selectlens.rundir import read_run_config

    wanted = read_run_config(run).device
    try:
        return str(check_device(wanted))
    except ConfigError:
        click.echo(f"notice: the run's device {wanted} is not available here; using cpu", err=True)
        return "cpu"


def _run_eval(run: Path, sequences: int | None, device: str | None):
    from selectlens.evaluate import evaluate_model, write_eval
    from selectlens.rundir import load_run_model, read_jsonl

    dev = _run_device(run, device)
    model, cfg = load_run_model(run)  # evaluate_model moves it to the device
    result = evaluate_model(model, cfg, sequences=sequences, device=dev)
    paths = write_eval(run, result, read_jsonl(run / "metrics.jsonl"))
    if result.get("non_finite"):
        click.echo(f"warning: the evaluation holds non-finite values ({', '.join(result['non_finite'][:3])}"
                   f"{', …' if len(result['non_finite']) > 3 else ''}); see non_finite in eval.json", err=True)
    return result, paths


@cli.command()
@click.option("--run", "run", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--data", "data_file", required=True, type=click.Path(path_type=Path),
              help="A safetensors file with a `tokens` tensor [B, T, F] (e.g. from `selectlens data`), or for raw-data "
                   "runs `x` [B, N, d] and `y` [B, N]; with a `target` tensor the loss is printed too.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Output .safetensors with tensor `prediction`: [B], or [B, P] where the model predicts at P positions.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--device", default=None, help="torch device (default: the run's; cpu when absent here).")
def predict(run, data_file, out, force, device) -> None:
    """Apply a run's model to a data file."""
    from selectlens.fileio import atomic_write, safetensors_bytes
    from selectlens.rundir import load_run_model
    from selectlens.tasks.io import DataFileError, check_writable, load_prediction_input
    from selectlens.tasks.protocol import make_task

    check_writable(out, force=force)
    dev = _run_device(run, device)
    model, cfg = load_run_model(run, device=dev)
    task = make_task(cfg, device="cpu")
    tensors, data_cfg = load_prediction_input(data_file)
    if data_cfg is not None and data_cfg.data.task != cfg.data.task:
        raise DataFileError(f"{data_file}: a {data_cfg.data.task} data file does not fit the run's {cfg.data.task} model")
    data_layout = make_task(data_cfg, device="cpu").layout if data_cfg is not None else task.layout
    if "tokens" in tensors and data_layout != task.layout:
        raise DataFileError(f"{data_file}: its tokens are in the {data_layout} layout, "
                            f"the run's model reads the {task.layout} layout (give x and y instead, or tokens of its layout)")
    tokens = task.tokens_for_prediction(tensors)
    if tokens is None:
        raise DataFileError(f"data file {data_file} has no 'tokens' tensor (tensors: {', '.join(sorted(tensors)) or 'none'})"
                            + task.prediction_input_hint())
    if tokens.shape[-1] != model.spec.n_features or tokens.shape[1] > model.spec.n_positions:
        raise DataFileError(
            f"{data_file}: tokens {list(tokens.shape[1:])} do not fit the model "
            f"(needs width {model.spec.n_features}, length <= {model.spec.n_positions})"
        )
    problem = task.check_tokens(tokens)
    if problem:
        raise DataFileError(f"{data_file}: {problem}")
    tokens = tokens.to(dev, next(model.parameters()).dtype)
    pred = model.predict_positions(tokens, task.readout).cpu()
    pred = pred[:, 0] if task.n_readout == 1 else pred  # one read-out position: [B]
    target = tensors.get("target")
    if target is not None and tuple(target.shape) != tuple(pred.shape):
        raise DataFileError(f"{data_file}: 'target' has shape {list(target.shape)}, the predictions {list(pred.shape)}")
    atomic_write(out, safetensors_bytes({"prediction": pred}, {"run": str(run), "data": str(data_file)}))
    click.echo(f"wrote {pred.shape[0]} predictions {list(pred.shape)} to {out}")
    if target is not None:
        mse = ((pred.double() - target.double()) ** 2).mean().item()
        where = "over all read-out positions" if pred.dim() == 2 else "against 'target'"
        click.echo(f"MSE {where}: {mse:.5f}")


@cli.command("import")
@click.option("--checkpoint", required=True, type=click.Path(path_type=Path), help="Original .pt/.pth state dict.")
@click.option("--config", "config", required=True,
              help=f"The original YAML the checkpoint was trained with, or a preset name ({', '.join(presets())}).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New run directory.")
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
def import_checkpoint(checkpoint, config, overrides, out, force) -> None:
    """Turn an original-project checkpoint into a run directory (for eval, predict, interpret)."""
    from selectlens.model import ModelSpec, import_legacy_state_dict, save_model
    from selectlens.rundir import prepare_run_dir

    cfg = _config(config, overrides)
    with run_dir_lock(out):
        check_new_run_dir(out, force=force)
        model = import_legacy_state_dict(checkpoint, ModelSpec.from_config(cfg))  # validate before touching --out
        prepare_run_dir(out, cfg, force=force)
        save_model(model, out / "model.safetensors", {"imported_from": str(checkpoint)})
    click.echo(f"imported {checkpoint} into {out}")


@cli.command()
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (default: the config's out_dir).")
@click.option("--force", is_flag=True, help="Replace an existing run directory.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None, help="Training time limit.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (default: the config's).")
@click.option("--device", default=None, help="torch device (default: the config's).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(config, overrides, out, force, max_minutes, seed, device, quiet) -> None:
    """The main job: train → evaluate → interpret, into one run directory; prints where the report is."""
    from selectlens.interpret.report import interpret_run
    from selectlens.rundir import check_interpret_memory
    from selectlens.train import train as run_training

    cfg = _config(config, overrides, seed=seed, device=device)
    run_dir = _default_run_dir(cfg, out)
    with run_dir_lock(run_dir):
        check_new_run_dir(run_dir, force=force)
        dev = str(check_device(cfg.device))
        check_interpret_memory(cfg, RUN_INTERPRET_SEQUENCES, dev, "use a smaller config")  # before training, not after
        click.echo(f"[1/3] training {cfg.data.task} ({cfg.training.epochs} epochs) into {run_dir}")
        result = run_training(cfg, run_dir, force=force, max_minutes=max_minutes, progress=not quiet)
        _report_training(result)
        click.echo(f"[2/3] evaluating on {cfg.eval.sequences:,} held-out sequences")
        ev, paths = _run_eval(run_dir, None, None)
        m = ev["predictors"]["model"]
        ref = ev["reference"]  # the best honest baseline, chosen on training data
        cv = ev["predictors"][ref]
        click.echo(f"model MSE {m['mse']:.5f} [{m['ci_low']:.5f}, {m['ci_high']:.5f}]; {ref} "
                   f"{cv['mse']:.5f}; paired ({ref} − model) 95% CI [{cv['paired_diff_ci'][0]:+.5f}, {cv['paired_diff_ci'][1]:+.5f}]")
        click.echo("[3/3] interpreting (attention, clusters, probes, logit lens, attribution, ablation, patching)")
        report = interpret_run(run_dir, sequences=RUN_INTERPRET_SEQUENCES, device=dev, progress=not quiet)
        click.echo(f"evaluation: {paths['md']}")
        click.echo(f"report: {report['html']}")


RUN_INTERPRET_SEQUENCES = 512  # `interpret`'s default


@cli.command()
@click.option("--run", "run", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Report directory (default: RUN/report).")
@click.option("--sequences", type=click.IntRange(min=16), default=512, help="Held-out sequences analysed.")
@click.option("--device", default=None, help="torch device (default: the run's; cpu when absent here).")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def interpret(run, out, sequences, device, quiet) -> None:
    """Every analysis on a run's model: PNGs, interpret.json and a self-contained report.html."""
    from selectlens.interpret.report import interpret_run

    from selectlens.rundir import check_interpret_memory, read_run_config

    if out is not None and out.exists() and not out.is_dir():
        raise click.UsageError(f"--out exists and is not a directory: {out}")
    with run_dir_lock(run, existing=True):
        dev = _run_device(run, device)
        check_interpret_memory(read_run_config(run), sequences, dev)
        paths = interpret_run(run, out, sequences=sequences, device=dev, progress=not quiet)
    click.echo(f"wrote {len(paths)} files; report: {paths['html']}")


@cli.command("export-tl")
@click.option("--run", "run", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="New folder for the Hugging Face export.")
@click.option("--force", is_flag=True, help="Write into an existing non-empty folder.")
def export_tl(run, out, force) -> None:
    """Export a run as a local GPT-2 folder for TransformerBridge.boot_transformers (offline)."""
    from selectlens.interpret.tl_export import export_for_transformer_lens
    from selectlens.rundir import load_run_model

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not force)):
        raise click.UsageError(f"--out exists: {out} (use --force to write into it)")
    check_new_run_dir(out, force=True)
    model, _ = load_run_model(run)
    try:
        folder = export_for_transformer_lens(model, out)
    except ImportError:
        raise click.UsageError("export-tl needs transformers: pip install 'selectlens[hf]'") from None
    click.echo(f"exported to {folder}; TransformerBridge.boot_transformers('{folder}') boots it offline")


@cli.command()
@click.argument("spec_file", required=False, type=click.Path(path_type=Path))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Sweep directory (trials go to OUT/trials/<name>).")
@click.option("--resume", is_flag=True, help="Continue the sweep in --out: done trials are kept, the others continue.")
@click.option("--force", is_flag=True, help="Replace an existing sweep directory.")
@click.option("--address", default=None, help="An existing Ray cluster: auto or HOST:PORT (default: start a local Ray).")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None, help="At most this many trials at once.")
def sweep(spec_file, out, resume, force, address, max_concurrent) -> None:
    """Run a sweep spec (base config, overrides, grid, seeds, resources, stages) on Ray Tune."""
    from selectlens.sweeps import load_spec, run_sweep

    if resume and force:
        raise click.UsageError("--resume and --force exclude each other")
    if spec_file is None and not resume:
        raise click.UsageError("give a SPEC_FILE (or --resume an existing sweep)")
    spec = load_spec(spec_file) if spec_file is not None else None
    result = run_sweep(spec, out, resume=resume, force=force, address=address, max_concurrent=max_concurrent,
                       echo=lambda line: click.echo(line))
    click.echo(f"sweep finished: {result.count('done')} done, {result.count('failed')} failed of "
               f"{len(result.statuses)}; summary: {result.sweep_dir / 'summary.md'}")
    if result.count("failed"):
        raise click.exceptions.Exit(1)


@cli.command("sweep-report")
@click.argument("sweep_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="HTML file (default: SWEEP_DIR/report.html).")
def sweep_report(sweep_dir, out) -> None:
    """Summary tables and plots of each metric against each swept key, as one offline HTML page."""
    from selectlens.sweeps.report import write_sweep_report

    path = write_sweep_report(sweep_dir, out)
    click.echo(f"report: {path}")


@cli.group()
def bench() -> None:
    """Benchmarks against reference implementations, measured in the same run."""


@bench.command("datagen")
@click.option("--task", type=click.Choice(["regression", "classification"]), default="regression",
              help="regression: the original regression config; classification: the original classification config.")
@click.option("--config", "config", default=None,
              help=f"Use this config (file or preset: {', '.join(presets())}) instead of the task's original one.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--device", default=None, help="torch device for SelectLens (the reference always runs on CPU).")
@click.option("--sequences", type=click.IntRange(min=1), default=None, help="Sequences per timed SelectLens epoch.")
@click.option("--reference-sequences", type=click.IntRange(min=1), default=None,
              help="Sequences for the reference (its rate does not depend on the count).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_datagen(task, config, overrides, device, sequences, reference_sequences, as_json) -> None:
    """Sequences/s of batched generation vs. per-sequence scikit-learn fits (the original's way)."""
    from selectlens.benchmarks.datagen import bench_datagen as run

    preset = config or ("model_selection" if task == "regression" else "classification")
    cfg = _config(preset, overrides)
    dev = check_device(device or cfg.device)
    result = run(cfg, device=str(dev), sequences=sequences, reference_sequences_count=reference_sequences)
    if as_json:
        _emit_json(result)
        return
    click.echo(f"task {result['task']}, {result['sequences']} sequences, device {result['device']}")
    click.echo(f"  selectlens : {result['ours_seq_per_s']:>12,.0f} sequences/s")
    click.echo(f"  reference  : {result['reference_seq_per_s']:>12,.1f} sequences/s "
               f"(scikit-learn per sequence, {result['reference_sequences']} sequences)")
    click.echo(f"  ratio      : {result['ratio']:>12,.1f}x")


@bench.command("train")
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--device", default=None, help="torch device for SelectLens (the reference always runs on CPU).")
@click.option("--reference-sequences", type=click.IntRange(min=2), default=1000,
              help="Sequences for the reference (its rate does not depend on the count).")
@click.option("--contend", type=click.IntRange(min=1), default=None,
              help="Instead: training steps/s of each thread policy alone and beside this many busy processes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_train(config, overrides, device, reference_sequences, contend, as_json) -> None:
    """Sequences/s of a full epoch (data + training) vs. the original pipeline (sklearn data, HF GPT-2, batch 32)."""
    from selectlens.benchmarks.train import bench_train as run

    cfg = _config(config, overrides)
    if contend:
        from selectlens.benchmarks.train import bench_contention, contention_lines

        result = bench_contention(cfg, contend=contend)
        _emit_json(result) if as_json else click.echo("\n".join(contention_lines(result)))
        return
    dev = check_device(device or cfg.device)
    result = run(cfg, device=str(dev), reference_sequences_count=reference_sequences)
    result["config"] = config or "default"
    if as_json:
        _emit_json(result)
        return
    click.echo(f"full epoch, config {result['config']}, device {result['device']}")
    click.echo(f"  selectlens : {result['ours_seq_per_s']:>10,.0f} sequences/s "
               f"({result['sequences_per_epoch']} sequences, batch {result['batch_size']})")
    if result["reference_sequences"]:
        click.echo(f"  reference  : {result['reference_seq_per_s']:>10,.1f} sequences/s "
                   f"(sklearn data + HF GPT2Model, batch 32, {result['reference_sequences']} sequences)")
        click.echo(f"  ratio      : {result['ratio']:>10,.1f}x")
    else:
        click.echo(f"  reference  : none for data.task {result['task']} (the original pipeline had only the selection tasks)")
    _echo_efficiency(result)


def _echo_efficiency(result: dict) -> None:
    """`bench train`'s second block: achieved GFLOP/s against a matmul, and the profile split."""
    click.echo(f"step efficiency ({result['torch_threads']} threads, compile {result['compile']}, "
               f"fused Adam {result['fused_adam']}; first epoch {result['first_epoch_s']:.2f} s)")
    click.echo(f"  FLOPs      : {result['flops_per_sequence'] / 1e6:>10,.2f} MFLOP per training sequence (fwd + bwd)")
    click.echo(f"  achieved   : {result['achieved_gflops']:>10,.2f} GFLOP/s "
               f"({result['train_sequences_per_epoch']} training sequences per epoch)")
    click.echo(f"  matmul     : {result['matmul_gflops']:>10,.2f} GFLOP/s (1024x1024 fp32, same threads)")
    click.echo(f"  fraction   : {result['matmul_fraction']:>10.1%}")
    click.echo("  profile    : " + ", ".join(f"{k.replace('_', ' ')} {v:.0%}" for k, v in result["profile"].items()))


def _noise_levels(ctx, param, value: str) -> list[float]:
    try:
        levels = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"not a comma-separated list of numbers: {value!r}") from None
    if not levels or not all(v > 0 and v < float("inf") for v in levels):
        raise click.BadParameter(f"noise levels must be finite and > 0: {value!r}")
    return levels


@bench.command("baselines")
@click.option("--task", type=click.Choice(["mixed_noise_regression"]), default="mixed_noise_regression",
              help="The raw-data task whose exact Bayes baseline is timed.")
@click.option("--d", "d", type=click.IntRange(min=1), default=5, show_default=True, help="Input dimension.")
@click.option("--N", "N", type=click.IntRange(min=2), default=20, show_default=True, help="(x, y) pairs per sequence.")
@click.option("--noise-levels", default="0.1,0.5", show_default=True, callback=_noise_levels,
              help="Comma-separated noise sds σ (uniform prior).")
@click.option("--device", default="cpu", show_default=True, help="torch device for SelectLens (the reference is numpy).")
@click.option("--sequences", type=click.IntRange(min=1), default=4096, show_default=True, help="Sequences per timed call.")
@click.option("--reference-sequences", type=click.IntRange(min=1), default=200, show_default=True,
              help="Sequences for the numpy reference (its rate does not depend on the count).")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="torch threads. The numpy reference runs on one core, so both sides get one by default; "
                   "several threads only pay off on an otherwise idle machine.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_baselines(task, d, N, noise_levels, device, sequences, reference_sequences, threads, as_json) -> None:
    """Sequences/s of the batched exact Bayes mixture (all prefixes) vs. a per-sequence, per-prefix numpy loop."""
    import torch

    from selectlens.benchmarks.raw_baselines import bench_baselines as run

    dev = check_device(device)
    if threads:
        torch.set_num_threads(threads)
    result = run(d=d, N=N, sigmas=noise_levels, sequences=sequences, reference_sequences=reference_sequences,
                 device=str(dev))
    if as_json:
        _emit_json(result)
        return
    click.echo(f"{task}: Bayes posterior mixture, all {N} prefixes, d={d}, σ={noise_levels}, device {result['device']}, "
               f"{result['torch_threads']} torch threads")
    click.echo(f"  selectlens : {result['ours_seq_per_s']:>12,.0f} sequences/s ({result['sequences']} sequences)")
    click.echo(f"  reference  : {result['reference_seq_per_s']:>12,.1f} sequences/s "
               f"(numpy, per sequence and prefix, {result['reference_sequences']} sequences)")
    click.echo(f"  ratio      : {result['ratio']:>12,.1f}x")
    click.echo(f"  max |ours − reference| : {result['max_abs_diff']:.2e}")


@bench.command("sweep")
@click.option("--trials", type=click.IntRange(min=1), default=8, help="Tiny trials on each side.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench_sweep(trials, as_json) -> None:
    """Wall time of tiny trials through Ray Tune (local Ray start-up included) vs. sequential `selectlens train` runs."""
    from selectlens.sweeps.bench import bench_sweep as run

    result = run(trials=trials)
    if as_json:
        _emit_json(result)
        return
    click.echo(f"{result['trials']} tiny trials (train only), {result['cpus']} CPUs, {result['cpus_per_trial']:g} CPU per trial")
    click.echo(f"  ray tune        : {result['ray_s']:>8.1f} s (local Ray start and stop included)")
    click.echo(f"  sequential CLI  : {result['cli_s']:>8.1f} s ({result['trials']} `selectlens train` processes)")
    click.echo(f"  ratio CLI / Ray : {result['ratio']:>8.2f}x; identical metrics.jsonl: {result['identical_metrics']}")


def _one_line(message: str) -> str:
    """Control characters from user input (a path with a newline, say) are shown escaped."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in str(message))


def _error(message: str) -> None:
    click.echo(f"error: {_one_line(message)}", err=True)


BENCH_EXAMPLES = {
    "datagen": "selectlens bench datagen --task classification --json",
    "train": "selectlens bench train --config mixed_noise_cpu --set data.layout=interleaved",
    "baselines": "selectlens bench baselines --d 5 --N 20 --threads 1",
    "sweep": "selectlens bench sweep --trials 8 --json",
}

for _group, _examples in ((cli, EXAMPLES), (cli.commands.get("bench"), BENCH_EXAMPLES)):
    for _name, _example in _examples.items():
        if _group is not None and _name in _group.commands:
            _group.commands[_name].epilog = f"Example: {_example}"


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every expected failure into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="selectlens", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code or 0)
    except click.exceptions.Abort:
        _error("aborted")
        return 130
    except click.ClickException as e:
        message = e.format_message()
        _error(message.splitlines()[0] if message else str(e))
        return e.exit_code
    except SelectLensError as e:
        _error(str(e))
        return e.exit_code
    except OSError as e:  # an unreadable or unwritable path the checks could not foresee
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        _error(f"{e.strerror or e.__class__.__name__}{where}")
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
