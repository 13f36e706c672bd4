"""experiments/gpu_check.py --quick on a simulated bare GPU box: hydra, omegaconf, wandb, faiss, mlxtend and
matplotlib unimportable, and timm too, so the embedding section cannot build its ViT: every other section still
gives its numbers, that one records why it failed, the ELFS section says what it lacks, and the summary printed
last names each. With ``--deadline-s 60`` the call ends within the deadline, naming the sections it skipped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = ("hydra", "omegaconf", "wandb", "faiss", "mlxtend", "matplotlib", "timm")
DISTS = ("hydra-core", "omegaconf", "wandb", "faiss-cpu", "mlxtend", "matplotlib", "timm")

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


def run_check(tmp_path: Path, *args: str, timeout: float = 1500) -> tuple[subprocess.CompletedProcess, dict, float]:
    """experiments/gpu_check.py ``args`` from the repository root on the simulated bare box: (process, JSON, s)."""
    blocker = blocker_dir(tmp_path / "blocker")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(blocker), "OUT": str(out), "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    cmd = [sys.executable, "experiments/gpu_check.py", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, json.loads((out / "gpu_check.json").read_text()), time.monotonic() - t0


def summary(stdout: str) -> dict[str, str]:
    """The summary lines printed last: section key -> what follows its name."""
    lines = stdout.strip().splitlines()
    tail = [ln for ln in lines if ln.startswith("SUMMARY ")]
    assert tail and lines[-len(tail) :] == tail, "the summary lines must come last"
    return dict(ln[len("SUMMARY ") :].split(": ", 1) for ln in tail)


MEASURED = {  # section -> a number it must have measured
    "resnet18_32px_batch256": lambda r: r["fast"]["images_per_s"] > 0 and r["plain"]["images_per_s"] > 0,
    "temi_paper_shape": lambda r: r["batched"]["seconds_per_epoch"] > 0 and r["loop_over_batched"] > 0,
    "temi_bf16_vs_fp32": lambda r: 0 <= r["agreement"] <= 1 and isinstance(r["passed"], bool),
    "knn_torch_vs_faiss": lambda r: r["recall_at_k"] > 0.9 and r["reference"].startswith("fp64 brute force"),
    "kmeans_torch_vs_sklearn": lambda r: r["inertia_ratio"] > 0 and r["passed"],
    "record_with_test_eval": lambda r: r["passed"] and r["evaluations"] == 2,
    "concurrent_evaluations": lambda r: r["concurrent_s"] > 0 and r["speedup"] > 0,
    "lockstep_vs_separate": lambda r: r["speedup"] > 0,
}


@pytest.mark.slow
def test_gpu_check_quick_on_a_bare_box_without_timm(tmp_path: Path) -> None:
    """Every section but the embedding one gives numbers; that one fails with its reason; ELFS is skipped."""
    proc, report, _ = run_check(tmp_path, "--quick", "--deadline-s", "1400")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert report["packages"]["bare_missing"] == ["timm"]
    assert report["running"] is None and report["header_status"] == "ok"
    assert report["torch"] and report["lightning"] and "triton" in report and "c_compiler" in report
    for name, measured in MEASURED.items():
        assert report[name]["status"] == "ok", report[name]
        assert measured(report[name]), report[name]
    assert report["resnet18_32px_batch256"]["settings"]["fast"]["deterministic"] is False
    embed = report["embed_dino_vitb16_224px"]
    assert embed["status"] == "failed" and "timm" in embed["reason"], embed
    elfs = report["elfs_vs_random_mnist5k"]
    assert elfs["status"] == "skipped"
    for pip_name in ("hydra-core", "omegaconf", "faiss-cpu", "mlxtend", "matplotlib"):
        assert pip_name in elfs["reason"]
    assert "experiments/wheels/*.whl" in elfs["reason"]
    lines = summary(proc.stdout)
    assert lines["embed_dino_vitb16_224px"].startswith("failed: ") and "timm" in lines["embed_dino_vitb16_224px"]
    assert lines["elfs_vs_random_mnist5k"].startswith("skipped: needs")
    for name in MEASURED:
        assert lines[name].startswith("ok ("), lines[name]
    assert "PASS recall_at_k=" in lines["knn_torch_vs_faiss"]
    assert "GPU available" not in proc.stdout  # Lightning's banners stay in the sections' logs
    assert (tmp_path / "out" / "gpu_check_embed.log").is_file()


@pytest.mark.slow
def test_gpu_check_ends_within_its_deadline_naming_what_it_skipped(tmp_path: Path) -> None:
    proc, report, seconds = run_check(tmp_path, "--quick", "--deadline-s", "60", timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert seconds < 60 + 15, seconds  # the interpreter's start and the last JSON write past the deadline
    lines = summary(proc.stdout)
    skipped = [k for k, v in lines.items() if v.startswith("skipped: would not fit")]
    assert skipped and "elfs_vs_random_mnist5k" in lines
    for name in skipped:
        assert report[name]["status"] == "skipped" and "left" in report[name]["reason"]
    assert report["running"] is None
