"""Experiment tracking for one Hydra job: one W&B run (offline by default) or CSV files, shared by all stages.

W&B is opened once per job inside the run folder and closed with `finish()` (Hydra multirun runs all jobs in
one process; without finish() the next job would log into this run). Each stage gets its own Lightning logger
over that run, with the stage name as prefix, so curves of different stages never mix.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from elfs.config import LoggerConfig

log = logging.getLogger(__name__)


class RunLoggers:
    """Builds per-stage Lightning loggers and logs summaries, artifacts and the final table."""

    def __init__(
        self, cfg: LoggerConfig, run_dir: Path, *, config: dict | None = None, run_name: str | None = None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.kind = cfg.name
        self.run = None
        if cfg.name == "wandb" and cfg.mode == "disabled":
            log.info("WANDB_MODE=disabled: logging training curves to CSV in %s", self.run_dir / "csv")
            self.kind = "csv"
        if self.kind == "wandb":
            import wandb

            os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")
            self.run = wandb.init(
                project=cfg.project,
                group=cfg.group,
                mode=cfg.mode,
                dir=str(self.run_dir),
                config=config,
                tags=list(cfg.tags),
                name=run_name,
                reinit="finish_previous",
            )

    def for_stage(self, stage: str):
        """A Lightning logger for one stage's training curves (False when logging is off)."""
        if self.kind == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            return WandbLogger(experiment=self.run, prefix=stage)
        if self.kind == "csv":
            from lightning.pytorch.loggers import CSVLogger

            return CSVLogger(save_dir=str(self.run_dir), name="csv", version=stage)
        return False

    def log_metrics(self, metrics: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def log_results(self, results: dict[str, Any], files: list[Path]) -> None:
        """Log the results table and attach the coreset indices and scores as a W&B artifact."""
        if self.run is None:
            return
        import wandb

        table = wandb.Table(columns=["budget", "pruning_rate", "method", "beta", "acc_mean", "acc_std"])
        for row in results["results"]:
            for method, m in row["methods"].items():
                table.add_data(row["budget"], row["pruning_rate"], method, row.get("beta"), m["acc_mean"], m["acc_std"])
        self.run.log({"results": table})
        art = wandb.Artifact(
            f"coresets-{self.run.id}",
            type="coreset",
            metadata={"dataset": results["dataset"], "backbone": results["backbone"]},
        )
        for f in files:
            if Path(f).exists():
                art.add_file(str(f))
        self.run.log_artifact(art)

    def finish(self) -> None:
        if self.run is not None:
            import wandb

            self.run.finish()
            wandb.finish()
            self.run = None
