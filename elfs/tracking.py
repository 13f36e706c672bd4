"""Experiment tracking for one Hydra job: one W&B run (offline by default) or CSV files, shared by all stages.

W&B is opened once per job inside the run folder and closed with `finish()` (Hydra multirun runs all jobs in
one process; without finish() the next job would log into this run). Each stage gets its own Lightning logger
over that run, with the stage name as prefix, so curves of different stages never mix. Every job also logs the
same headline keys (summary `acc`, `best_acc`, `beta`; config `method`, `score`, `budget`, `encoder`) and one
key per budget (`acc/0.1`, `best_acc/0.1`, `beta/0.1`), so one W&B table of a sweep sorts and plots without per-arm
columns. Accuracies are in percent, as every table prints them; beta is the fraction the tables show.

Curves of the trainings that come from the cache (the beta search's validation accuracy by beta, each evaluation's
loss and test accuracy by step) are stored with their cache entry and logged when the run reaches them, so a job
whose stages were all cached shows the same panels: one per budget and arm, each with its own x axis
(`evaluate/0.1/double_end/step`). Without the `wandb` package the CSV logger takes over (`pip install "elfs[wandb]"`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from elfs.config import LoggerConfig

log = logging.getLogger(__name__)

#: files of the run folder that travel in every artifact of the run (beside the arm's coreset)
RUN_FILES = ("results.json", "scores.npz")
_WARNED_NO_WANDB: list[bool] = []  # the missing-wandb warning is printed once per process (a sweep's jobs share one)


def wandb_available() -> bool:
    """Whether `import wandb` works; if not, one warning line (per process) naming the extra that installs it."""
    try:
        import wandb  # noqa: F401
    except ImportError as e:
        if not _WARNED_NO_WANDB:
            _WARNED_NO_WANDB.append(True)
            log.warning('W&B is not installed (%s): logging to CSV instead; pip install "elfs[wandb]" to get W&B', e)
        return False
    return True


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
        if self.kind == "wandb" and not wandb_available():
            self.kind = "csv"
        if self.kind == "wandb":
            import wandb

            os.environ.setdefault("WANDB_INIT_TIMEOUT", "30")
            self.run = wandb.init(
                project=cfg.project,
                entity=cfg.entity,
                group=cfg.group or group,
                job_type=cfg.job_type,
                mode=cfg.mode,
                dir=str(self.run_dir),
                config=with_columns(config),
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

    def log_curve(self, panel: str, x_name: str, series: dict[str, tuple[Any, Any]]) -> None:
        """Curves of one panel (``panel/<name>`` against ``panel/<x_name>``): ``series`` maps a name to its
        (x values, y values). Each panel has its own x axis, so curves logged in any order never share W&B's
        global step."""
        if self.run is None or not series:
            return
        x_key = f"{panel}/{x_name}"
        self.run.define_metric(x_key, hidden=True)
        for name, (xs, ys) in series.items():
            key = f"{panel}/{name}"
            self.run.define_metric(key, step_metric=x_key)
            for x, y in zip(list(xs), list(ys), strict=True):
                self.run.log({x_key: _number(x), key: _number(y)})

    def log_results(self, results: dict[str, Any], files: list[Path]) -> None:
        """Accuracies as run summary metrics (sortable, parallel coordinates), the table, the plots as images, and
        one versioned coreset artifact per (dataset, encoder, arm)."""
        if self.run is None:
            return
        import wandb

        self.run.summary.update(summary_metrics(results))
        self.run.summary.update(headline_metrics(results))
        self.run.config.update(result_columns(results), allow_val_change=True)
        table = wandb.Table(
            columns=["budget", "pruning_rate", "arm", "beta", "acc_%", "acc_std_%", "best_acc_%", "uses_ground_truth"]
        )
        for row in results["results"]:
            for arm, m in row["methods"].items():
                table.add_data(
                    row["budget"],
                    row["pruning_rate"],
                    arm,
                    m.get("beta"),
                    _percent(m["acc_mean"]),
                    _percent(m["acc_std"]),
                    _percent(m.get("best_mean")),
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

    def log_sweep_summary(self, summary: list[dict[str, Any]], plot: Path | None, failed: list[dict[str, Any]]) -> None:
        """A sweep's summary rows (summary.csv) as a table, summary.png as an image, and the failed jobs if any."""
        if self.run is None:
            return
        import wandb

        if summary:  # the accuracies in percent, as summary.md prints them
            columns = list(summary[0])
            rows = [[_percent(row.get(c)) if c in PERCENT_COLUMNS else row.get(c) for c in columns] for row in summary]
            self.run.log({"summary_table": wandb.Table(columns=columns, data=rows, allow_mixed_types=True)})
        if plot is not None and Path(plot).is_file():
            self.run.log({"summary_plot": wandb.Image(str(plot))})
        if failed:
            table = wandb.Table(columns=["job", "type", "error"])
            for f in failed:
                table.add_data(Path(f["job"]).name, f.get("type"), f.get("error"))
            self.run.log({"failed_jobs": table})
        self.run.summary.update({"jobs_failed": len(failed), "summary_rows": len(summary)})

    def finish(self) -> None:
        if self.run is not None:
            import wandb

            self.run.finish()
            wandb.finish()
            self.run = None


#: summary.csv's columns that hold accuracies (fractions there), logged in percent
PERCENT_COLUMNS = ("acc_mean", "acc_std", "best_mean", "best_std")


def _percent(value: Any) -> Any:
    """A fraction as the percent every table prints (None, and anything not a number, as it is)."""
    try:
        return round(100.0 * float(value), 4) if value not in (None, "") else value
    except (TypeError, ValueError):
        return value


def _number(value: Any) -> float | int:
    """A plain Python number for W&B (numpy scalars included)."""
    v = value.item() if hasattr(value, "item") else value
    return v if isinstance(v, int) else float(v)


def sweep_group(name: str, sweep_dir: Path) -> str:
    """The W&B group of every job of one sweep (and of its summary run): '<name>/<sweep folder>'."""
    sweep_dir = Path(sweep_dir)
    return f"{name}/{sweep_dir.parent.name}/{sweep_dir.name}"


def _first(budget: Any) -> Any:
    return budget[0] if isinstance(budget, (list, tuple)) and budget else budget


def with_columns(config: dict | None) -> dict | None:
    """The W&B run config with the sortable columns at its top level, as configured (log_results replaces them
    with what the job ran); the groups stay as they are (the dataset's name is `dataset.name`). A config without a
    selection group (a sweep's summary run) is left as it is."""
    if not config or "selection" not in config:
        return config
    out = dict(config)
    sel, backbone = out.get("selection") or {}, out.get("backbone") or {}
    columns = {
        "method": sel.get("method"),
        "score": sel.get("score"),
        "budget": _first(sel.get("budget")),
        "encoder": backbone.get("name"),
    }
    return {**out, **columns}


def _own_arm(results: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, dict[str, Any] | None]:
    """The job's own selection arm, and its first feasible budget's row and entry (None when not evaluated)."""
    sel = results.get("selection") or {}
    arm = sel.get("arm") or sel.get("method")
    rows = results.get("results") or []
    for row in rows:
        if arm in row.get("methods", {}):
            return arm, row, row["methods"][arm]
    return arm, (rows[0] if rows else None), None


def headline_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """The job's own arm, whatever it is, under the same keys in every job, so a sweep's table sorts by them: per
    budget `acc/<b>` and `best_acc/<b>` (percent) and `beta/<b>`, and `acc`, `best_acc`, `beta` at its first
    feasible budget (absent where it has none)."""
    arm, _, _ = _own_arm(results)
    out: dict[str, Any] = {}
    for row in results.get("results") or []:
        m = row.get("methods", {}).get(arm)
        b = f"{row['budget']:g}"
        values = {
            "acc": _percent(m.get("acc_mean")) if m else None,
            "best_acc": _percent(m.get("best_mean")) if m else None,
            "beta": m.get("beta") if m else row.get("beta"),
        }
        for k, v in values.items():
            if v is not None:
                out[f"{k}/{b}"] = v
                out.setdefault(k, v)
    return out


def result_columns(results: dict[str, Any]) -> dict[str, Any]:
    """The run config's sortable columns as the job ran: its arm, that arm's score, the first feasible budget,
    and the encoder (backbone)."""
    arm, row, m = _own_arm(results)
    sel = results.get("selection") or {}
    return {
        "method": arm,
        "score": m.get("score") if m else sel.get("score"),
        "budget": row["budget"] if row else None,
        "encoder": results.get("backbone"),
    }


def summary_metrics(results: dict[str, Any]) -> dict[str, Any]:
    """Flat run-summary metrics of every arm: acc/<arm>/<b> (final checkpoint, mean over seeds), acc_std/...,
    best_acc/... (best of run, where tested), in percent; and the full-data reference as acc/full/1."""
    out: dict[str, Any] = {}
    for row in results["results"]:
        b = f"{row['budget']:g}"
        for arm, m in row["methods"].items():
            out[f"acc/{arm}/{b}"] = _percent(m["acc_mean"])
            out[f"acc_std/{arm}/{b}"] = _percent(m["acc_std"])
            if m.get("best_mean") is not None:
                out[f"best_acc/{arm}/{b}"] = _percent(m["best_mean"])
    full = results.get("full_data")
    if full:
        out["acc/full/1"] = _percent(full["acc_mean"])
        if full.get("best_mean") is not None:
            out["best_acc/full/1"] = _percent(full["best_mean"])
    return out


def coreset_artifacts(results: dict[str, Any], run_dir: Path) -> list[tuple[str, dict[str, Any], list[Path]]]:
    """(name, metadata, files) of one artifact per (dataset, encoder, arm): that arm's kept indices at every budget
    and seed (an .npz written into the run folder), with beta, budget, score direction and N in the metadata, plus
    the run's results.json and scores.npz, so that every artifact of a run says how it was made. Unlabelled data
    (nothing evaluated) gets one artifact, of the job's own method. The name repeats across runs, so W&B
    versions it."""
    import re

    import numpy as np

    from elfs.infra.names import HARD_END

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
    if not arms and results.get("selection"):
        arms = _unevaluated_arm(results)
    run_files = [Path(run_dir) / f for f in RUN_FILES if (Path(run_dir) / f).is_file()]
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
        out.append((name, meta, [f, *run_files]))
    return out


def _unevaluated_arm(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job's own method as coreset_artifacts' one arm when nothing was evaluated (its coresets are stored
    under the method's name, one per budget)."""
    sel = results["selection"]
    m = {
        "method": sel["method"],
        "score": sel.get("score"),
        "labels": sel.get("labels"),
        "uses_ground_truth": sel.get("uses_ground_truth", False),
        "backbone": results.get("backbone"),
    }
    rows = results.get("results") or []
    return {
        sel["method"]: {
            "m": m,
            "budgets": [r["budget"] for r in rows],
            "beta": {f"{r['budget']:g}": r.get("beta") for r in rows},
        }
    }
