"""Metric sinks: ``metrics.jsonl`` is always written by the loop; Weights & Biases
is optional, on when ``wandb.project`` is set (``pip install selectlens[wandb]``)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Callable

from selectlens.config import Config, ConfigError


class MetricSinks:
    """Forwards each epoch's record to the optional sinks."""

    def __init__(self, wandb_run: Any = None, callback: Callable[[dict[str, Any]], None] | None = None):
        self.wandb_run = wandb_run
        self.callback = callback  # e.g. a sweep trial reporting each epoch to its scheduler

    @classmethod
    def from_config(cls, config: Config, run_dir: Path,
                    callback: Callable[[dict[str, Any]], None] | None = None) -> "MetricSinks":
        if not config.wandb.project:
            return cls(callback=callback)
        try:
            import wandb
        except ImportError:
            raise ConfigError("wandb.project is set but wandb is not installed (pip install 'selectlens[wandb]')") from None
        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
        id_file.write_text(run_id)
        run = wandb.init(
            project=config.wandb.project, entity=config.wandb.entity, name=config.wandb.name,
            notes=config.wandb.notes, config=config.to_dict(), dir=str(run_dir), id=run_id, resume="allow",
        )
        return cls(run, callback)

    def log(self, record: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback(record)
        if self.wandb_run is None:
            return
        flat = {k: v for k, v in record.items() if k not in ("baselines", "full_size")}
        flat.update({f"baselines/{k}": v for k, v in record.get("baselines", {}).items()})
        full = record.get("full_size", {})  # a curriculum run's full-size split
        flat.update({f"full_size/{k}": v for k, v in full.items() if k != "baselines"})
        flat.update({f"full_size/baselines/{k}": v for k, v in full.get("baselines", {}).items()})
        self.wandb_run.log(flat, step=int(record["step"]))

    def close(self) -> None:
        if self.wandb_run is not None:
            self.wandb_run.finish()
            self.wandb_run = None
