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
        self,
        cfg: LoggerConfig,
        run_dir: Path,
        *,
        config: dict | None = None,
        run_name: str | None = None,
        group: str | None = None,
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
                group=cfg.group or group,
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
        """Accuracies as run summary metrics (sortable, parallel coordinates), the table, the plots as images, and
        one versioned coreset artifact per (dataset, encoder, arm)."""
        if self.run is None:
            return
        import wandb

        self.run.summary.update(summary_metrics(results))
        table = wandb.Table(
            columns=["budget", "pruning_rate", "arm", "beta", "acc_mean", "acc_std", "best_mean", "uses_ground_truth"]
        )
        for row in results["results"]:
            for arm, m in row["methods"].items():
                table.add_data(
                    row["budget"],
                    row["pruning_rate"],
                    arm,
                    m.get("beta"),
                    m["acc_mean"],
                    m["acc_std"],
                    m.get("best_mean"),
                    m.get("uses_ground_truth", False),
                )
        self.run.log({"results": table})
        images = {f"plots/{Path(f).stem}": wandb.Image(str(f)) for f in files if str(f).endswith(".png")}
        if images:
            self.run.log(images)
        for name, meta, paths in coreset_artifacts(results, self.run_dir):
            art = wandb.Artifact(name, type="coreset", metadata=meta)
            for f in paths:
                art.add_file(str(f))
            self.run.log_artifact(art)

    def finish(self) -> None:
        if self.run is not None:
            import wandb

            self.run.finish()
            wandb.finish()
            self.run = None


def summary_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """Flat run-summary metrics: acc/<arm>/budget=<b> (final checkpoint, mean over seeds), best_acc/... (best of
    run, where tested), beta/budget=<b>, and the full-data reference; fractions in [0, 1]."""
    out: dict[str, Any] = {}
    for row in results["results"]:
        b = f"budget={row['budget']:g}"
        if row.get("beta") is not None:
            out[f"beta/{b}"] = row["beta"]
        for arm, m in row["methods"].items():
            out[f"acc/{arm}/{b}"] = m["acc_mean"]
            out[f"acc_std/{arm}/{b}"] = m["acc_std"]
            if m.get("best_mean") is not None:
                out[f"best_acc/{arm}/{b}"] = m["best_mean"]
    full = results.get("full_data")
    if full:
        out["acc/full/budget=1"] = full["acc_mean"]
        if full.get("best_mean") is not None:
            out["best_acc/full/budget=1"] = full["best_mean"]
    return out


def coreset_artifacts(results: dict[str, Any], run_dir: Path) -> list[tuple[str, dict[str, Any], list[Path]]]:
    """(name, metadata, files) of one artifact per (dataset, encoder, arm): that arm's kept indices at every budget
    and seed (an .npz written into the run folder), with beta, budget, score direction and N in the metadata.
    The name repeats across runs, so W&B versions it."""
    import re

    import numpy as np

    from elfs.dynamics import HARD_END

    path = Path(run_dir) / "coresets.npz"
    if not path.is_file():
        return []
    with np.load(path) as z:
        stored = {k: z[k] for k in z.files}
    arms: dict[str, dict[str, Any]] = {}
    for row in results["results"]:
        for arm, m in row["methods"].items():
            a = arms.setdefault(arm, {"m": m, "budgets": [], "beta": {}})
            a["budgets"].append(row["budget"])
            a["beta"][f"{row['budget']:g}"] = m.get("beta")
    out = []
    folder = Path(run_dir) / "artifacts"
    for arm, a in arms.items():
        m = a["m"]
        encoder = m.get("backbone") or "any-encoder"
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"coreset-{results['dataset']}-{encoder}-{arm}")
        arrays = {k: v for k, v in stored.items() if k.startswith(f"{arm}_budget")}
        if not arrays:
            continue
        folder.mkdir(exist_ok=True)
        f = folder / f"{name}.npz"
        np.savez(f, **arrays)
        score = m.get("score")
        meta = {
            "dataset": results["dataset"],
            "encoder": m.get("backbone"),
            "arm": arm,
            "method": m.get("method", arm),
            "score": score,
            "score_hard_end": HARD_END.get(score, "high" if score == "prototype_distance" else None),
            "labels": m.get("labels"),
            "uses_ground_truth": bool(m.get("uses_ground_truth", False)),
            "budgets": a["budgets"],
            "beta": a["beta"],
            "n": results["n_train"],
            "seeds": m.get("seeds"),
            "code_version": results.get("code_version"),
        }
        out.append((name, meta, [f]))
    return out
