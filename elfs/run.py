"""One job of the pipeline, from its composed config to its run folder: what `elfs`, `elfs-select`, a rank started by
rank 0 and :func:`elfs.api.select_images` all run. Nothing here reads argv or picks an exit code (elfs/cli/ does).

Ctrl-C during a job raises :class:`Interrupted`, whose message says what the cache kept.
"""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")  # before anything imports wandb: never reach for the network
os.environ.setdefault("WANDB_SILENT", "true")

import dataclasses  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from omegaconf import DictConfig, OmegaConf  # noqa: E402

from elfs.config import ElfsConfig, register_configs, to_typed  # noqa: E402
from elfs.errors import UserError  # noqa: E402
from elfs.infra.overrides import apply_debug_mode  # noqa: E402

log = logging.getLogger("elfs")
register_configs()


def _quiet_lightning() -> None:
    """Lightning prints GPU/TPU banners and tips for every Trainer; the pipeline builds dozens of them."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
        "lightning.fabric.utilities.seed",
        "lightning.pytorch.trainer.connectors.signal_connector",
        "faiss.loader",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    import warnings

    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*Tip.*litlogger.*")
    # Lightning's hint to prepend srun (elfs/infra/runtime.py SRUN_HINT), also from the preflight's SLURM check; a DDP
    # run inside a SLURM job outside srun is refused by elfs/preflight.py with what to do instead
    from elfs.infra.runtime import SRUN_HINT

    warnings.filterwarnings("ignore", message=SRUN_HINT)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept (complete cache entries, epoch checkpoints)."""


_SIGINT_SEEN = False  # Lightning turns a Ctrl-C inside fit() into sys.exit(1); this tells the two apart


def on_sigint(signum, frame) -> None:
    """The SIGINT handler a command installs: remembers the Ctrl-C, so a job stopped by it reads as interrupted."""
    global _SIGINT_SEEN
    _SIGINT_SEEN = True
    raise KeyboardInterrupt


def sigint_seen() -> bool:
    """Whether Ctrl-C was pressed since the command started (Lightning may have turned it into sys.exit(1))."""
    return _SIGINT_SEEN


def kept_message(cache) -> str:
    """One line: which complete stage artifacts and resumable checkpoints this run leaves behind."""
    if cache is None:
        return "interrupted before any stage ran; nothing was kept"
    stages = list(dict.fromkeys(e["stage"] for e in cache.events))
    work = sorted(p.parent.name for p in Path(cache.root).glob("*/.work-*/last.ckpt"))
    kept = []
    if stages:
        kept.append(f"complete stages ({', '.join(stages)})")
    if work:
        kept.append(f"epoch checkpoints of {', '.join(dict.fromkeys(work))}")
    if not kept:
        return f"interrupted before any stage finished; nothing was kept in {cache.root}"
    return f"interrupted; kept {' and '.join(kept)} in {cache.root}; rerun the same command to resume from there"


def _discard_run_dir(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but Hydra's own files (the run stopped before doing any work)."""
    if run_dir.is_dir() and all(p.name in (".hydra", "main.log", "train.log") for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def run(cfg: DictConfig | ElfsConfig) -> dict:
    """Run the pipeline for one composed config; write the report into the run folder; return the results.

    Every check of the input runs before any work: the config (values, names, files, weights, writable folders)
    before loading, the data right after loading; a failed check raises a UserError and leaves no run folder.
    With several devices (trainer=ddp) every rank runs this whole function (elfs/infra/distributed.py); rank 0 alone
    writes the run folder, the W&B run and the printed table.
    """
    from elfs.cache import ArtifactCache
    from elfs.config import LoggerConfig
    from elfs.infra import distributed
    from elfs.launch import session
    from elfs.pipeline import Context, prepare_data, run_pipeline
    from elfs.preflight import check_config, check_paths
    from elfs.tables.report import write_report
    from elfs.tracking import RunLoggers

    _quiet_lightning()
    run_dir = Path(cfg.paths.output_dir)
    try:
        cfg = apply_debug_mode(cfg)
        conf = to_typed(cfg)
        if conf.plan:  # elfs-select / select_images with plan=true (`elfs` plans before Hydra runs anything)
            from elfs.plan import check_planned, plan_job, print_plan

            check_planned(conf)
            print_plan([plan_job(conf, list(_overrides()))], conf.paths.root_dir, conf.plan_rates)
            _discard_run_dir(run_dir)
            return {"plan": True}
        check_config(conf)
        check_paths(conf)
    except UserError:
        _discard_run_dir(run_dir)
        raise
    resolved = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else None
    plain = resolved if resolved is not None else dataclasses.asdict(conf)  # an ElfsConfig from elfs-select
    with session(conf.trainer, plain):  # ranks started here run this config (elfs/launch)
        zero = distributed.is_zero()
        if not zero:  # progress lines, bars and INFO logs are rank 0's (srun ranks share one log file)
            conf = dataclasses.replace(conf, progress=False)
            logging.getLogger().setLevel(logging.WARNING)
        try:
            ds, num_clusters, data_seconds = prepare_data(conf)
        except UserError:
            if zero:
                _discard_run_dir(run_dir)
            raise
        loggers = None
        cache = ArtifactCache(Path(conf.paths.cache_dir), recompute=frozenset(conf.recompute))
        try:
            loggers = _open_outputs(conf, resolved, run_dir) if zero else RunLoggers(LoggerConfig(name="none"), run_dir)
            ctx = Context(cfg=conf, cache=cache, run_dir=run_dir, loggers=loggers, timings={"data": data_seconds})
            t0 = time.perf_counter()
            results = run_pipeline(ctx, ds, num_clusters)
            results["run_dir"] = str(run_dir)
            results["config_overrides"] = list(_overrides())
            results.update(_versions())
            results["config"] = plain
            if zero:
                from elfs.plan import record_run

                record_run(conf, results)  # what a later plan=true finds in the cache
                table, files = write_report(results, run_dir)
                loggers.log_results(results, files + [run_dir / "coresets.npz", run_dir / "scores.npz"])
                log.info("pipeline finished in %.1fs", time.perf_counter() - t0)
                print("\n" + table + f"\nresults: {run_dir / 'results.json'}", flush=True)
            return results
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt) or (_SIGINT_SEEN and isinstance(e, SystemExit)):
                raise Interrupted(kept_message(cache)) from None
            raise
        finally:
            if loggers is not None:
                loggers.finish()


def _versions() -> dict[str, str | None]:
    from elfs.infra.version import code_version, git_commit

    return {"code_version": code_version(), "git_commit": git_commit()}


def _open_outputs(conf: ElfsConfig, resolved: dict | None, run_dir: Path):
    """Rank 0's run folder: the resolved config (Hydra writes .hydra/ only for its own runs, not for elfs-select)
    and the W&B / CSV run (an elfs.tracking.RunLoggers) named and grouped by the sweep."""
    from elfs.tracking import RunLoggers

    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved if resolved is not None else conf))
    name, group = _run_name_and_group(conf.name, run_dir)
    return RunLoggers(conf.logger, run_dir, config={**(resolved or {}), **_versions()}, run_name=name, group=group)


def _run_name_and_group(name: str, run_dir: Path) -> tuple[str, str | None]:
    """W&B run name and group: in a sweep, the job's folder name (its number and overrides, e.g.
    '3_selection.budget=0.1,selection=ccs'; elfs/infra/job_names.py) and one group per sweep ('<name>/<sweep folder>');
    a single run is named by its folder and has no group."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            from elfs.tracking import sweep_group

            return run_dir.name, sweep_group(name, Path(hc.sweep.dir))
    except ValueError:  # not inside a Hydra job (elfs-select, tests calling run())
        pass
    return run_dir.name, None


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []
