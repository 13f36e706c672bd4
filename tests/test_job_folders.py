"""A sweep's job folders (and W&B run names) are one short, readable path component, whatever the overrides: a
path override is reduced to its file name instead of nesting the folder one level per path component, and twenty
long overrides stay under the 255-byte limit on a file name; the full overrides stay in each job's .hydra/."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml

from elfs.infra.job_names import ITEM_SEP, MAX_BYTES, job_name


def test_job_name_by_hand():
    assert job_name(3, f"selection.budget=0.1{ITEM_SEP}selection=ccs") == "3_selection.budget=0.1,selection=ccs"
    assert job_name(0, "") == "0"
    # a path becomes its file name, a list of paths each; a value's own commas and brackets stay
    assert job_name(1, f"dataset.path=/data/a/b/x.npz{ITEM_SEP}selection.baselines=[random,full]") == (
        "1_dataset.path=x.npz,selection.baselines=[random,full]"
    )
    assert job_name(2, "+files=[/a/b.txt,c/d.txt]") == "2_+files=[b.txt,d.txt]"
    assert job_name(4, "dataset.path=/data/imgs/") == "4_dataset.path=imgs"
    long_value = "v" * 100
    short = job_name(5, f"name={long_value}")
    assert short.startswith("5_name=vvvv") and "~" in short and len(short.encode()) < 70
    assert job_name(5, f"name={long_value}") == short != job_name(5, f"name={long_value}w")  # a hash tells them apart
    many = ITEM_SEP.join(f"cluster.key_{i:02d}=0.1000000000" for i in range(20))
    name = job_name(12, many)
    assert len(name.encode()) <= MAX_BYTES and name.startswith("12_cluster.key_00=0.1000000000,")
    kept = name.count("=")
    assert name.endswith(f",+{20 - kept}")  # what does not fit is counted
    assert "/" not in job_name(6, "a=x\\y/z")


#: twenty float settings of the groups spelled long (the same numbers): Hydra's default folder name of one job
#: would hold more than a thousand bytes. Those after `dataset.path` in sorted order are swept, each over one value
#: (`choice(...)`), so they belong in the name and must be cut short; the cluster's are plain overrides.
_FLOATS = [("cluster.beta", "0.6"), ("cluster.student_temp", "0.1"), ("cluster.teacher_temp", "0.1"),
           ("cluster.teacher_momentum", "0.996"), ("cluster.probs_momentum", "0.9"), ("cluster.lr", "0.0001"),
           ("cluster.min_lr", "0.0001"), ("dataset.test_fraction", "0.2"), ("dynamics.lr", "0.1"),
           ("dynamics.momentum", "0.9"), ("dynamics.weight_decay", "0.0005"), ("dynamics.min_lr", "0.0001"),
           ("selection.val_fraction", "0.1"), ("selection.d2_gamma", "0.1"), ("selection.d2_beta", "0.0"),
           ("evaluate.lr", "0.1"), ("evaluate.momentum", "0.9"), ("evaluate.weight_decay", "0.0005"),
           ("evaluate.min_lr", "0.0001"), ("trainer.ddp_timeout_min", "120.0")]  # fmt: skip
LONG = [f"{k}={v}{'0' * 36}" if k.startswith("cluster.") else f"{k}=choice({v}{'0' * 36})" for k, v in _FLOATS]


def _srun_on_path(tmp_path: Path) -> str:
    """A PATH whose first folder has `srun` (the real one where SLURM is installed), as on a cluster's login node:
    Lightning warns wherever it finds one."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = shutil.which("srun")
    srun = bin_dir / "srun"
    if real:
        srun.symlink_to(real)
    else:  # Lightning only looks the command up; this one says it is no cluster if called
        srun.write_text("#!/bin/sh\necho 'srun: not a SLURM cluster' >&2\nexit 1\n")
        srun.chmod(srun.stat().st_mode | stat.S_IXUSR)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.slow
def test_a_sweep_over_paths_and_twenty_long_overrides(tmp_path, elfs_cli):
    """`elfs -m dataset=npz dataset.path=/…/x.npz,/…/y.npz …` with twenty long overrides, from an empty folder: one
    folder level per job, named by its number and its swept values with each path's file name, under 255 bytes;
    the job's .hydra/overrides.yaml keeps every override whole. With srun on PATH, no Lightning srun hint."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images * 16).clip(0, 255).astype(np.uint8)
    y = d.target.astype(np.int64)
    paths = [tmp_path / "my data" / "deep" / "folder" / "x.npz", tmp_path / "other" / "y.npz"]
    for path in paths:
        path.parent.mkdir(parents=True)
        np.savez(path, x_train=x[:1200], y_train=y[:1200], x_test=x[1200:], y_test=y[1200:])
    work = tmp_path / "work"
    work.mkdir()
    args = [
        "-m",
        "dataset=npz",
        f"dataset.path={paths[0]},{paths[1]}",
        "selection=random",
        "selection.budget=0.3",
        "selection.baselines=[]",
        "evaluate.steps=4",
        "logger=none",
        *LONG,
    ]  # fmt: skip (random: one training)
    p = elfs_cli(args, cwd=work, env_extra={"PATH": _srun_on_path(tmp_path)}, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "srun` command is available" not in p.stderr + p.stdout
    (sweep,) = (work / "outputs" / "multiruns").glob("*/*")
    jobs = sorted(d for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit())
    assert len(jobs) == 2
    for i, (job, path) in enumerate(zip(jobs, paths, strict=True)):
        assert "/" not in job.name and len(job.name.encode()) < 255, job.name
        assert job.name.startswith(f"{i}_dataset.path={path.name},dataset.test_fraction=0.2,"), job.name
        assert "cluster." not in job.name and job.name.split(",")[-1].startswith("+"), job.name  # the rest counted
        assert (job / "results.json").is_file(), sorted(f.name for f in job.iterdir())
        overrides = [o.replace("\\ ", " ") for o in yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())]
        assert f"dataset.path={path}" in overrides and "selection.budget=0.3" in overrides, overrides
        assert len(overrides) == 6 + len(LONG) + 1  # the first six words, the twenty, logger
    assert (sweep / "summary.md").is_file()
    # nothing nested below the sweep folder but the jobs themselves (no folder per path component)
    assert {d.name for d in sweep.iterdir() if d.is_dir()} == {j.name for j in jobs}
