"""The ``selectlens`` command line: parses flags, calls the library, prints.

Every user-facing problem (bad config, flag, file, path) is printed as one
``error: ...`` line on stderr with a non-zero exit code (2 for bad input),
never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from selectlens.config import Config, check_device, load_config
from selectlens.errors import SelectLensError

CONFIG_HELP = "Config file, or a preset name (default, model_selection, classification). Default: default."
SET_HELP = "Override a config value, e.g. --set training.lr=1e-3 (repeatable)."


def _config(config: str | None, overrides: tuple[str, ...], **direct: object) -> Config:
    """Load the config, apply ``--set`` overrides, then direct flags such as ``--seed``."""
    extra = [f"{k}={json.dumps(v)}" for k, v in direct.items() if v is not None]
    return load_config(config, list(overrides) + extra)


def _emit_json(obj: object) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=False))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="selectlens")
def cli() -> None:
    """SelectLens: in-context model-selection tasks, transformers, baselines, interpretability."""


@cli.command()
@click.option("--config", "config", default=None, help=CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--sequences", type=click.IntRange(min=1), default=None,
              help="Number of sequences (default: data.train_samp_per_class).")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (default: the config's).")
@click.option("--device", default=None, help="torch device (default: the config's).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=True, path_type=Path),
              help="Output .safetensors file.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def data(config, overrides, sequences, seed, device, out, force) -> None:
    """Generate sequences and write them, with their ground truth, to a safetensors file."""
    from selectlens.tasks import make_generator, make_task, save_task_batch
    from selectlens.tasks.io import check_writable

    cfg = _config(config, overrides, seed=seed, device=device)
    check_writable(out, force=force)  # fail before spending time on generation
    dev = check_device(cfg.device)
    n = sequences or cfg.data.train_samp_per_class
    task = make_task(cfg, device=dev)
    batch = task.sample(n, make_generator(cfg.seed, dev))
    path = save_task_batch(out, batch, cfg, force=force)
    click.echo(f"wrote {n} {cfg.data.task_name} sequences (tokens {list(batch.tokens.shape)}) to {path}")


@cli.group()
def bench() -> None:
    """Benchmarks against reference implementations, measured in the same run."""


@bench.command("datagen")
@click.option("--task", type=click.Choice(["regression", "classification"]), default="regression",
              help="regression: the original regression config; classification: the original classification config.")
@click.option("--config", "config", default=None, help="Use this config instead of the task's original one.")
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


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every expected failure into one line and an exit code."""
    try:
        cli.main(args=argv, prog_name="selectlens", standalone_mode=False)
    except click.exceptions.Exit as e:
        return int(e.exit_code or 0)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        return 130
    except click.ClickException as e:
        click.echo(f"error: {e.format_message().splitlines()[0] if e.format_message() else e}", err=True)
        return e.exit_code
    except SelectLensError as e:
        click.echo(f"error: {e}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
